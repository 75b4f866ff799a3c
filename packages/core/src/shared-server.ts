/**
 * One transport server for many nodes in one process. Each node attaches an
 * endpoint and gets a `TransportServer` of its own to use as before (the same
 * address for all); every inbound request goes to the endpoint that holds the
 * slot the request names: the job, the target task, the role (a replication
 * update is for a backup, every other request for the primary) and the token. A
 * primary and a backup of one task may live in the same process: the role tells
 * them apart even where a backend counts tokens per lock, so both can be "1".
 *
 * A request no endpoint holds (a stale token, a task that moved, another job) is
 * handed to any attached endpoint, whose own checks reject it with exactly the
 * typed error a node of its own would give (`NotOwnerError`, counted in its
 * stats); with none attached, the server answers that error itself. Routing is a
 * scan of the attached endpoints' slots: a handful of comparisons each, far below
 * a call's own cost at the node counts a process runs.
 */
import { InvalidArgumentError, NotOwnerError, systemClock } from '@taskgraph/api';
import type { Clock, InboundRequest, RequestHandler, Transport, TransportServer } from '@taskgraph/api';
import { withTimeout } from './async.js';
import { METHODS } from './replication-wire.js';

/** The slots a node holds now, as the router needs them. */
export interface HeldSlots {
  readonly job: string;
  /** The task the node runs as primary, with its token. */
  primary(): { readonly id: number; readonly token: string } | undefined;
  /** The task the node holds a backup of, with the backup slot's token. */
  backup(): { readonly id: number; readonly token: string } | undefined;
}

/** True when `req` names a slot `held` holds. */
export function holdsRequestedSlot(req: InboundRequest, held: HeldSlots): boolean {
  const m = req.meta;
  if (m.job !== held.job) return false;
  const slot = req.method === METHODS.update ? held.backup() : held.primary();
  return slot !== undefined && slot.id === m.to && slot.token === m.token;
}

/** One node's side of the shared server. */
export interface ServerEndpoint {
  /** For logs and errors. */
  readonly name: string;
  readonly handler: RequestHandler;
  /** True when this endpoint holds the slot `req` names; its handler still does every check itself. */
  routes(req: InboundRequest): boolean;
}

export interface SharedServerStats {
  /** Requests routed to the endpoint holding their slot. */
  readonly routed: number;
  /** Requests no endpoint held (answered NotOwnerError). */
  readonly unrouted: number;
}

export class SharedServer {
  private readonly endpoints: Attached[] = [];
  private server: Promise<TransportServer> | undefined;
  private closed = false;
  private routed = 0;
  private unrouted = 0;

  constructor(
    private readonly transport: Transport,
    private readonly clock: Clock = systemClock,
  ) {}

  get stats(): SharedServerStats {
    return { routed: this.routed, unrouted: this.unrouted };
  }

  /** Endpoints attached now. */
  get attached(): number {
    return this.endpoints.length;
  }

  /** Attaches a node; the first attach starts the one server. */
  async attach(endpoint: ServerEndpoint): Promise<TransportServer> {
    if (this.closed) throw new InvalidArgumentError('the shared server is closed');
    this.server ??= this.transport.listen({ handler: this.route, methods: [] });
    let server: TransportServer;
    try {
      server = await this.server;
    } catch (err) {
      this.server = undefined;
      throw err;
    }
    const a: Attached = new Attached(endpoint, server.address, this.clock, {
      detach: () => this.detach(a),
      changed: () => this.applyMethods(),
      health: (node, serving) => server.setServingStatus?.(node, serving),
    });
    this.endpoints.push(a);
    return a;
  }

  /** Closes the one server (the nodes should have left first). */
  async close(options: { readonly graceMs?: number } = {}): Promise<void> {
    this.closed = true;
    const server = await this.server?.catch(() => undefined);
    await server?.close(options);
  }

  private readonly route = (req: InboundRequest): Promise<Uint8Array> => {
    const target = this.endpoints.find((a) => a.endpoint.routes(req));
    if (target) {
      this.routed++;
      return target.call(req);
    }
    this.unrouted++;
    const any = this.endpoints[0];
    if (any) return any.call(req);
    return Promise.reject(
      new NotOwnerError(`this node does not run task ${req.meta.to} with the requested token`, { details: { task: req.meta.to } }),
    );
  };

  private detach(a: Attached): void {
    const i = this.endpoints.indexOf(a);
    if (i >= 0) this.endpoints.splice(i, 1);
    this.applyMethods();
  }

  /** The one server serves every method some attached node serves. */
  private applyMethods(): void {
    const methods = new Set<string>();
    for (const a of this.endpoints) for (const m of a.methods) methods.add(m);
    void this.server?.then((s) => s.serve([...methods])).catch(() => undefined);
  }
}

/** What a node holds of the shared server: its endpoint, its methods, its calls in flight. */
class Attached implements TransportServer {
  methods: readonly string[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Aborts this node's calls in flight when it closes past its grace. */
  private readonly cancel = new AbortController();
  private closing: Promise<void> | undefined;

  constructor(
    readonly endpoint: ServerEndpoint,
    readonly address: string,
    private readonly clock: Clock,
    private readonly shared: { detach(): void; changed(): void; health(node: string, serving: boolean): void },
  ) {}

  /** Each node's health goes to the one server, under the node's name (the server sums them up). */
  setServingStatus(node: string, serving: boolean): void {
    this.shared.health(node, serving);
  }

  serve(methods: readonly string[]): void {
    if (this.closing) return;
    this.methods = [...methods];
    this.shared.changed();
  }

  call(req: InboundRequest): Promise<Uint8Array> {
    const signal = AbortSignal.any([req.signal, this.cancel.signal]);
    const p = this.endpoint.handler({ ...req, signal });
    this.inFlight.add(p);
    const done = (): void => void this.inFlight.delete(p);
    p.then(done, done);
    return p;
  }

  close(options: { readonly graceMs?: number } = {}): Promise<void> {
    this.closing ??= (async () => {
      this.shared.detach();
      const graceMs = options.graceMs ?? 0;
      if (this.inFlight.size > 0 && graceMs > 0) await withTimeout(this.clock, Promise.allSettled([...this.inFlight]).then(() => undefined), graceMs);
      this.cancel.abort(new NotOwnerError(`node ${this.endpoint.name} left`));
    })();
    return this.closing;
  }
}
