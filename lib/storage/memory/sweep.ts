/** How many entries the sweep checks between two looks at the clock. */
const CHECKS_PER_STEP = 256

/** Width of one bucket of the expiry index (ms). */
const BUCKET_MS = 300_000

/**
 * Keys by the time their record expires, in buckets of BUCKET_MS, so that a sweep visits the
 * records whose time has come instead of every record (at a million live grants, a full scan
 * every 30 s cost more than the requests it cleaned up after). A key stays in its bucket when its
 * record goes earlier (read after expiry, revoked, deleted): the sweep finds nothing and moves on.
 * One array slot per record; the key is the Map's own string.
 */
export class ExpiryIndex {
  readonly #buckets = new Map<number, string[]>()

  add (key: string, expiresAt: number): void {
    if (!Number.isFinite(expiresAt)) return
    const bucket = Math.floor(expiresAt / BUCKET_MS)
    const keys = this.#buckets.get(bucket)
    if (keys === undefined) this.#buckets.set(bucket, [key])
    else keys.push(key)
  }

  /** The buckets that have begun at `now`, each taken out of the index as the caller gets it. */
  * due (now: number): Generator<string[]> {
    const last = Math.floor(now / BUCKET_MS)
    const started = [...this.#buckets.keys()].filter(bucket => bucket <= last)
    for (const bucket of started) {
      const keys = this.#buckets.get(bucket)
      if (keys === undefined) continue
      this.#buckets.delete(bucket)
      yield keys
    }
  }
}

/**
 * The due keys of one index, one step per CHECKS_PER_STEP keys checked (a generator resumed per
 * key would cost more than the check itself). `deadline` is the record's (undefined when it is
 * gone already): the expired go, the others (a code kept longer after its use, a record saved
 * again with a later expiry) are filed again under their current deadline.
 */
export function * expire (index: ExpiryIndex, now: number, deadline: (key: string) => number | undefined, drop: (key: string) => void): Generator<void> {
  let n = 0
  for (const keys of index.due(now)) {
    for (const key of keys) {
      const at = deadline(key)
      if (at !== undefined) {
        if (at <= now) drop(key)
        else index.add(key, at)
      }
      if (++n === CHECKS_PER_STEP) { n = 0; yield }
    }
  }
}

/**
 * Runs sweep passes (`pass(now)`, `now` fixed for the pass) in slices of at most `sliceMs`,
 * yielding to the event loop between slices, one pass at a time; every `everyMs` (0: only when
 * asked) until closed.
 */
export class Sweeper {
  readonly #pass: (now: number) => Iterator<void>
  readonly #now: () => number
  readonly #sliceMs: number
  #interval: NodeJS.Timeout | undefined
  #pending: NodeJS.Immediate | undefined
  #sweeping: Iterator<void> | undefined
  #passDone: Promise<void> | undefined
  #resolvePass: (() => void) | undefined
  #closed = false

  constructor (pass: (now: number) => Iterator<void>, { now, sliceMs, everyMs }: { now: () => number, sliceMs: number, everyMs: number }) {
    this.#pass = pass
    this.#now = now
    this.#sliceMs = sliceMs
    if (everyMs > 0) {
      this.#interval = setInterval(() => { this.run() }, everyMs)
      this.#interval.unref()
    }
  }

  /** Start a pass unless one is running. Resolves when the pass ends. */
  run (): Promise<void> {
    if (this.#closed) return Promise.resolve()
    if (this.#sweeping) return this.#passDone ?? Promise.resolve()
    this.#sweeping = this.#pass(this.#now())
    this.#passDone = new Promise(resolve => { this.#resolvePass = resolve })
    this.#slice()
    return this.#passDone
  }

  close (): void {
    this.#closed = true
    if (this.#interval) clearInterval(this.#interval)
    if (this.#pending) clearImmediate(this.#pending)
    this.#interval = undefined
    this.#pending = undefined
    this.#finishPass()
  }

  #slice (): void {
    this.#pending = undefined
    const it = this.#sweeping
    if (!it || this.#closed) return
    const deadline = performance.now() + this.#sliceMs
    do {
      if (it.next().done === true) {
        this.#finishPass()
        return
      }
    } while (performance.now() < deadline)
    this.#pending = setImmediate(() => { this.#slice() })
  }

  #finishPass (): void {
    this.#sweeping = undefined
    const resolve = this.#resolvePass
    this.#resolvePass = undefined
    this.#passDone = undefined
    resolve?.()
  }
}
