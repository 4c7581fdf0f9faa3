// Small waiting helpers shared by the integration tests.

export const sleep = (ms: number): Promise<void> => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` every 50 ms until it is true; throws after `timeoutMs`, naming `what`. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** `work`'s outcome, or a failure naming `what` after `ms`. */
export function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/** Whether `promise` settles (either way) within `ms`. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([promise.then(() => true, () => true), sleep(ms).then(() => false)]);
}

/**
 * Resolves once `stream` emits 'drain', or after `ms` (false), leaving no listener behind: a writer
 * that waits in a loop on a peer that rightly stops reading would otherwise add one per turn (Node's
 * MaxListenersExceededWarning, "11 drain listeners added to [Socket]").
 */
export function drainedWithin(stream: NodeJS.EventEmitter, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (drained: boolean) => {
      clearTimeout(timer);
      stream.removeListener('drain', onDrain);
      resolve(drained);
    };
    const onDrain = () => done(true);
    const timer = setTimeout(() => done(false), ms);
    stream.once('drain', onDrain);
  });
}
