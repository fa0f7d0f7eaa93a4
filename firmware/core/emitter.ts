/** A small typed event emitter, so cores can report without importing node:events. */
export type Listener<T> = (event: T) => void;

export class Emitter<T> {
  private readonly listeners = new Set<Listener<T>>();

  on(listener: Listener<T>): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event: T): void {
    for (const l of [...this.listeners]) l(event);
  }

  get size(): number {
    return this.listeners.size;
  }
}
