/** A promise resolved from outside, once: "the task is in its epoch", "the state is there". */
export class Once<T = void> {
  readonly promise: Promise<T>;
  #resolve!: (value: T) => void;
  #done = false;

  constructor() {
    this.promise = new Promise<T>((resolve) => (this.#resolve = resolve));
  }

  get done(): boolean {
    return this.#done;
  }

  resolve(value: T): void {
    this.#done = true;
    this.#resolve(value);
  }
}
