/** Watches a promise without awaiting it, so a test can ask at any point whether it settled and how. */
export function track<T>(p: Promise<T>): { done: () => boolean; value: () => T | undefined; error: () => unknown } {
  let done = false;
  let value: T | undefined;
  let error: unknown;
  void p.then(
    (v) => {
      value = v;
      done = true;
    },
    (e: unknown) => {
      error = e;
      done = true;
    },
  );
  return { done: () => done, value: () => value, error: () => error };
}
