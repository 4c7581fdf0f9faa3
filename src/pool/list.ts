// A pool's state lists (cl_active, cl_waiting, sv_idle, …) as PgBouncer keeps them: each member
// carries its own links, so moving a connection from one list to another allocates nothing (a JS
// Set rehashes, allocating, as members come and go: several times per transaction). A member is
// in one list at a time; SHOW POOLS counts are list sizes.

/** The links a member carries (ClientConn, ServerConn). Only StateList touches them. */
export interface ListMember {
  prevInList: unknown;
  nextInList: unknown;
  inList: unknown;
}

export class StateList<T extends ListMember> implements Iterable<T> {
  private head: T | null = null;
  private tail: T | null = null;
  size = 0;

  has(x: T): boolean {
    return x.inList === this;
  }

  /** The oldest member (FIFO order: cl_waiting's next client), or undefined. */
  first(): T | undefined {
    return this.head ?? undefined;
  }

  /** Append `x`, leaving the list it was in. */
  add(x: T): this {
    if (x.inList === this) return this;
    if (x.inList !== null) (x.inList as StateList<T>).delete(x);
    x.inList = this;
    x.prevInList = this.tail;
    x.nextInList = null;
    if (this.tail === null) this.head = x;
    else this.tail.nextInList = x;
    this.tail = x;
    this.size++;
    return this;
  }

  delete(x: T): boolean {
    if (x.inList !== this) return false;
    const prev = x.prevInList as T | null;
    const next = x.nextInList as T | null;
    if (prev === null) this.head = next;
    else prev.nextInList = next;
    if (next === null) this.tail = prev;
    else next.prevInList = prev;
    x.inList = null;
    x.prevInList = null;
    x.nextInList = null;
    this.size--;
    return true;
  }

  /** Oldest first. The member being visited may leave the list meanwhile (others may not: take
   * a copy, `[...list]`, to change the list while walking it). */
  values(): IterableIterator<T> {
    return new ListWalk(this.head);
  }

  [Symbol.iterator](): IterableIterator<T> {
    return this.values();
  }
}

/** A walk over the links, one object per walk (a generator makes one per member visited). */
class ListWalk<T extends ListMember> implements IterableIterator<T> {
  private readonly result = { done: false, value: undefined as unknown as T };

  constructor(private upcoming: T | null) {}

  next(): IteratorResult<T> {
    const x = this.upcoming;
    if (x === null) return { done: true, value: undefined };
    this.upcoming = x.nextInList as T | null;
    this.result.value = x;
    return this.result;
  }

  [Symbol.iterator](): IterableIterator<T> {
    return this;
  }
}
