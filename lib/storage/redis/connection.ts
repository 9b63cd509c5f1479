import { performance } from 'node:perf_hooks'
import { Redis } from 'ioredis'
import type { RedisOptions, RedisStatus } from 'ioredis'
import { errors, RedisStoreError } from '../../errors.js'
import type { Script } from './scripts.js'

/**
 * The RedisStore's connection, with a bound on every operation.
 *
 * With `url`, the client is created with `commandTimeout` = `commandTimeoutMs`
 * (a stalled server rejects the command), `enableOfflineQueue: false` (nothing queues while
 * disconnected: a command issued then fails instead of waiting, possibly for minutes, and running
 * later behind the caller's back), `autoResendUnfulfilledCommands: false` (a command whose caller
 * already got an error is never replayed after a reconnection), `maxRetriesPerRequest: 1`, a
 * `connectTimeout` of 4 × `commandTimeoutMs` (at least 1 s), reconnection every 100 ms to 1 s, and
 * no auto-pipelining: ioredis runs one automatic pipeline at a time and starts a command's timeout
 * only when its pipeline is sent, so against a stalled server each command first waited for the
 * previous pipeline to time out (up to twice the bound, and requests queued behind each other).
 * On top of that, each operation gets one deadline of `commandTimeoutMs`, covering a short wait
 * for the connection to become ready (so start-up and reconnections are not errors), and it
 * applies to injected clients as well. While connected, on a client whose own `commandTimeout` is
 * at most `commandTimeoutMs` and that does not auto-pipeline, that bound is the client's, per
 * command (no timer of ours on the hot path).
 */
export class Connection {
  readonly client: Redis
  readonly #owned: boolean
  /** The client rejects every command after at most our deadline (its own `commandTimeout`). */
  readonly #clientBounded: boolean
  readonly #timeoutMs: number
  readonly #waiters = new Set<() => void>()
  #closed = false
  #lastError: Error | undefined

  readonly #onReady = (): void => {
    const waiters = [...this.#waiters]
    this.#waiters.clear()
    for (const wake of waiters) wake()
  }

  readonly #onError = (err: Error): void => { this.#lastError = err }

  /** Exactly one of `client` (injected, never quit) and `url` (a client created and quit here). */
  constructor (opts: { client?: Redis | undefined, url?: string | undefined, redisOptions?: RedisOptions | undefined }, timeoutMs: number) {
    this.#timeoutMs = timeoutMs
    if (opts.client) {
      if (opts.client.options.keyPrefix) {
        throw new errors.REDIS_STORE_OPTION('the ioredis client has a keyPrefix; use the store\'s `prefix` option instead')
      }
      this.client = opts.client
      this.#owned = false
    } else {
      this.client = new Redis(opts.url as string, {
        commandTimeout: timeoutMs,
        enableOfflineQueue: false,
        enableAutoPipelining: false,
        autoResendUnfulfilledCommands: false,
        maxRetriesPerRequest: 1,
        connectTimeout: Math.max(1000, 4 * timeoutMs),
        retryStrategy: (times: number) => Math.min(times * 100, 1000),
        ...opts.redisOptions
      })
      this.#owned = true
      // Connection errors surface as rejected operations; keep the last one for their message.
      this.client.on('error', this.#onError)
    }
    const bound = this.client.options.commandTimeout
    // An auto-pipelining client starts a command's timeout late (see above): our own deadline then.
    this.#clientBounded = typeof bound === 'number' && bound > 0 && bound <= timeoutMs && this.client.options.enableAutoPipelining !== true
    this.client.on('ready', this.#onReady)
    this.client.on('end', this.#onReady)
  }

  get closed (): boolean {
    return this.#closed
  }

  /**
   * From now on every operation fails; those waiting for the connection fail at once. Quits the
   * client when it was created here; an injected client is left open.
   */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.client.off('ready', this.#onReady)
    this.client.off('end', this.#onReady)
    this.#onReady()
    if (!this.#owned) return
    // The error listener stays: a late socket error must not be reported as unhandled.
    if (this.client.status === 'ready') {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        this.client.quit().catch(noop),
        new Promise<void>(resolve => { timer = setTimeout(resolve, this.#timeoutMs) })
      ])
      clearTimeout(timer)
    }
    if (this.client.status !== 'end') this.client.disconnect()
  }

  #status (): RedisStatus {
    return this.client.status
  }

  /** Run a script by SHA; load it (EVAL) when the server does not know it (first use, restart). */
  eval (name: string, s: Script, keys: string[], args: Array<string | number>): Promise<unknown> {
    return this.op(name, async (live) => {
      try {
        return await this.client.evalsha(s.sha, keys.length, ...keys, ...args)
      } catch (err) {
        if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT') || !live()) throw err
        return await this.client.eval(s.lua, keys.length, ...keys, ...args)
      }
    })
  }

  /**
   * One store operation under one deadline. When the connection is not ready, wait for it (up
   * to the deadline) rather than fail at once; after the deadline nothing more is sent, so an
   * operation the caller saw fail never runs later.
   */
  op<T> (name: string, fn: (live: () => boolean) => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new RedisStoreError(`RedisStore: ${name} after close()`))
    // The common case: connected, and the client bounds each command itself (`commandTimeout` no
    // longer than ours, as on the client the store creates). No timer or race of ours, no extra
    // promise: a deadline read from the clock keeps a retry (the script reload) from being sent
    // after it.
    if (this.client.status === 'ready' && this.#clientBounded) {
      const deadline = performance.now() + this.#timeoutMs
      try {
        return fn(() => performance.now() < deadline).then(undefined, (err: unknown) => { throw unavailable(name, err) })
      } catch (err) {
        return Promise.reject(unavailable(name, err))
      }
    }
    return this.#waitingOp(name, fn).then(undefined, (err: unknown) => { throw unavailable(name, err) })
  }

  /** An operation that may have to wait for the connection, under a deadline of its own. */
  async #waitingOp<T> (name: string, fn: (live: () => boolean) => Promise<T>): Promise<T> {
    let expired = false
    let wake: (() => void) | undefined
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        expired = true
        if (wake) this.#waiters.delete(wake)
        const cause = this.client.status === 'ready' ? '' : `; connection ${this.client.status}${this.#lastError ? ` (${this.#lastError.message})` : ''}`
        reject(new RedisStoreError(`RedisStore: ${name} timed out after ${this.#timeoutMs} ms${cause}`))
      }, this.#timeoutMs)
    })
    const work = async (): Promise<T> => {
      if (this.client.status !== 'ready') {
        if (this.client.status === 'wait') this.client.connect().catch(noop)
        if (this.client.status !== 'end') {
          await new Promise<void>(resolve => { wake = resolve; this.#waiters.add(resolve) })
        }
        if (expired) throw new RedisStoreError(`RedisStore: ${name} timed out`)
        if (this.#closed) throw new RedisStoreError(`RedisStore: ${name} after close()`)
        // Read through a function: TypeScript would keep the status narrowed across the await.
        if (this.#status() !== 'ready') throw new RedisStoreError(`RedisStore: ${name}: the Redis connection is closed`)
      }
      return await fn(() => !expired)
    }
    try {
      return await Promise.race([work(), deadline])
    } finally {
      clearTimeout(timer)
    }
  }
}

/** A failure of Redis or of the connection as a RedisStoreError (ioredis rejects with plain Errors: "Command timed out"). */
function unavailable (name: string, err: unknown): RedisStoreError {
  if (err instanceof RedisStoreError) return err
  return new RedisStoreError(`RedisStore: ${name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
}

function noop (): void {}
