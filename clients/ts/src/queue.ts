/**
 * An unbounded async queue: `push` from callbacks, consume with
 * `for await`. Ending it (or breaking out of the loop) stops iteration.
 */
export class AsyncQueue<T> implements AsyncIterableIterator<T> {
  private items: T[] = [];
  private waiters: ((r: IteratorResult<T>) => void)[] = [];
  private done = false;
  private error: unknown;

  constructor(private readonly onReturn: () => void = () => {}) {}

  push(item: T): void {
    if (this.done) return;
    const w = this.waiters.shift();
    if (w) w({ value: item, done: false });
    else this.items.push(item);
  }

  /** Ends the queue after the items already pushed; with an error, `next` rejects with it. */
  end(error?: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = error;
    if (this.items.length === 0) this.flushWaiters();
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.items.shift();
    if (item !== undefined) {
      if (this.done && this.items.length === 0) queueMicrotask(() => this.flushWaiters());
      return Promise.resolve({ value: item, done: false });
    }
    if (this.done) return this.finished();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  return(): Promise<IteratorResult<T>> {
    this.done = true;
    this.items = [];
    this.flushWaiters();
    this.onReturn();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  private finished(): Promise<IteratorResult<T>> {
    if (this.error !== undefined) {
      const e = this.error;
      this.error = undefined;
      return Promise.reject(e);
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  private flushWaiters(): void {
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
  }
}
