/**
 * Label selectors (equality- and set-based, as k8s.io/apimachinery/pkg/labels parses
 * them) and the field selectors ConfigMaps and Leases support (metadata.name and
 * metadata.namespace only, as on a real server for these kinds).
 */
import { badRequest } from './status.js';
import { labelKeyErrors, labelValueErrors } from './validation.js';

type Operator = 'exists' | '!' | '=' | '!=' | 'in' | 'notin' | 'gt' | 'lt';

interface Requirement {
  readonly key: string;
  readonly op: Operator;
  readonly values: readonly string[];
}

export interface LabelSelector {
  matches(labels: Readonly<Record<string, string>> | undefined): boolean;
  readonly empty: boolean;
}

function fail(selector: string, why: string): never {
  throw badRequest(`unable to parse requirement: ${why} (in label selector ${JSON.stringify(selector)})`);
}

class Scanner {
  pos = 0;
  constructor(readonly text: string) {}
  skipSpace(): void {
    while (this.pos < this.text.length && /\s/.test(this.text[this.pos] ?? '')) this.pos++;
  }
  atEnd(): boolean {
    this.skipSpace();
    return this.pos >= this.text.length;
  }
  peek(s: string): boolean {
    this.skipSpace();
    return this.text.startsWith(s, this.pos);
  }
  eat(s: string): boolean {
    if (this.peek(s)) {
      this.pos += s.length;
      return true;
    }
    return false;
  }
  /** A key or value: everything up to a space, comma, operator character or parenthesis. */
  word(): string {
    this.skipSpace();
    const start = this.pos;
    while (this.pos < this.text.length && !/[\s,=!<>()]/.test(this.text[this.pos] ?? '')) this.pos++;
    return this.text.slice(start, this.pos);
  }
}

function checkKey(selector: string, key: string): void {
  const errs = labelKeyErrors(key);
  if (errs.length > 0) fail(selector, `invalid label key "${key}": ${errs.join('; ')}`);
}

function checkValue(selector: string, value: string): void {
  const errs = labelValueErrors(value);
  if (errs.length > 0) fail(selector, `invalid label value: "${value}": at key: ${errs.join('; ')}`);
}

export function parseLabelSelector(selector: string | undefined): LabelSelector {
  const requirements: Requirement[] = [];
  if (selector !== undefined && selector.trim() !== '') {
    const s = new Scanner(selector);
    while (true) {
      let requirement: Requirement;
      if (s.eat('!')) {
        const key = s.word();
        checkKey(selector, key);
        requirement = { key, op: '!', values: [] };
      } else {
        const key = s.word();
        if (key === '') fail(selector, 'found empty key');
        checkKey(selector, key);
        if (s.eat('==') || s.eat('=')) {
          const value = s.word();
          checkValue(selector, value);
          requirement = { key, op: '=', values: [value] };
        } else if (s.eat('!=')) {
          const value = s.word();
          checkValue(selector, value);
          requirement = { key, op: '!=', values: [value] };
        } else if (s.eat('>') || s.eat('<')) {
          const op: Operator = selector[s.pos - 1] === '>' ? 'gt' : 'lt';
          const value = s.word();
          if (!/^-?\d+$/.test(value)) fail(selector, `for 'Gt', 'Lt' operators, the value must be an integer`);
          requirement = { key, op, values: [value] };
        } else if (s.peek('in') || s.peek('notin')) {
          const word = s.word();
          if (word !== 'in' && word !== 'notin') fail(selector, `found '${word}', expected: in, notin, =, ==, !=, gt, lt`);
          if (!s.eat('(')) fail(selector, `found '${s.text.slice(s.pos, s.pos + 1)}', expected: '('`);
          const values: string[] = [];
          if (!s.eat(')')) {
            while (true) {
              const value = s.word();
              checkValue(selector, value);
              values.push(value);
              if (s.eat(')')) break;
              if (!s.eat(',')) fail(selector, `found '${s.text.slice(s.pos, s.pos + 1)}', expected: ',' or ')'`);
            }
          }
          if (values.length === 0) fail(selector, `for 'in', 'notin' operators, values set can't be empty`);
          requirement = { key, op: word, values };
        } else if (s.atEnd() || s.peek(',')) {
          requirement = { key, op: 'exists', values: [] };
        } else {
          fail(selector, `found '${s.text.slice(s.pos, s.pos + 1)}', expected: in, notin, =, ==, !=, gt, lt`);
        }
      }
      requirements.push(requirement);
      if (s.atEnd()) break;
      if (!s.eat(',')) fail(selector, `found '${s.text.slice(s.pos, s.pos + 1)}', expected: ','`);
    }
  }
  return {
    empty: requirements.length === 0,
    matches(labels) {
      return requirements.every((r) => matchRequirement(r, labels ?? {}));
    },
  };
}

function matchRequirement(r: Requirement, labels: Readonly<Record<string, string>>): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, r.key);
  const value = has ? labels[r.key] : undefined;
  switch (r.op) {
    case 'exists':
      return has;
    case '!':
      return !has;
    case '=':
      return has && value === r.values[0];
    case '!=':
      return !has || value !== r.values[0];
    case 'in':
      return has && r.values.includes(value ?? '');
    case 'notin':
      return !has || !r.values.includes(value ?? '');
    case 'gt':
    case 'lt': {
      if (!has || !/^-?\d+$/.test(value ?? '')) return false;
      const n = Number(value);
      const bound = Number(r.values[0]);
      return r.op === 'gt' ? n > bound : n < bound;
    }
  }
}

export interface FieldSelector {
  matches(fields: { readonly name: string; readonly namespace: string }): boolean;
}

const SUPPORTED_FIELDS = ['metadata.name', 'metadata.namespace'] as const;

/** Field selectors: ConfigMaps and Leases only index metadata.name and metadata.namespace. */
export function parseFieldSelector(selector: string | undefined): FieldSelector {
  const terms: { field: (typeof SUPPORTED_FIELDS)[number]; negate: boolean; value: string }[] = [];
  if (selector !== undefined && selector.trim() !== '') {
    for (const raw of selector.split(',')) {
      const m = /^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(raw);
      if (m === null) throw badRequest(`invalid selector: '${selector}'; can't understand '${raw}'`);
      const field = m[1] ?? '';
      if (!(SUPPORTED_FIELDS as readonly string[]).includes(field)) {
        throw badRequest(`field label not supported: ${field}`);
      }
      terms.push({ field: field as (typeof SUPPORTED_FIELDS)[number], negate: m[2] === '!=', value: m[3] ?? '' });
    }
  }
  return {
    matches(fields) {
      return terms.every((t) => {
        const actual = t.field === 'metadata.name' ? fields.name : fields.namespace;
        return t.negate ? actual !== t.value : actual === t.value;
      });
    },
  };
}
