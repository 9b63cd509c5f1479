import type { Redis } from 'ioredis'
import type { AccessTokenRecord } from '../contract.js'
import { errors } from '../../errors.js'

export interface TokenCacheOptions {
  /** Access-token records kept at most (the oldest cached goes first). Default 10,000. */
  maxEntries?: number
  /**
   * Longest time one record is served from memory (ms), a backstop behind invalidation. Default
   * 30,000. The tracking connection is also pinged every `min(1000, maxAgeMs / 2)` ms; when a
   * ping fails, the cache is emptied and off until the connection is back.
   */
  maxAgeMs?: number
}

/** The options with their defaults, checked (a TypeError names the bad one). */
export function cacheSettings (opts: TokenCacheOptions = {}): Required<TokenCacheOptions> {
  const maxEntries = opts.maxEntries ?? 10_000
  const maxAgeMs = opts.maxAgeMs ?? 30_000
  if (!Number.isInteger(maxEntries) || maxEntries <= 0) throw new errors.REDIS_STORE_OPTION('cache.maxEntries must be a positive integer')
  if (!Number.isFinite(maxAgeMs) || maxAgeMs <= 0) throw new errors.REDIS_STORE_OPTION('cache.maxAgeMs must be a positive number')
  return { maxEntries, maxAgeMs }
}

/** Redis's channel for invalidation messages to RESP2 connections (CLIENT TRACKING ... REDIRECT). */
const INVALIDATE = '__redis__:invalidate'

interface Entry {
  record: AccessTokenRecord
  /** The heartbeat tick from which the entry is not served. */
  until: number
}

/** Reads in flight for one hash, and whether an invalidation came for it meanwhile. */
interface Pending {
  n: number
  dirty: boolean
}

/**
 * Access-token records of a RedisStore kept in process, exact through Redis's server-assisted
 * client-side caching: a connection of its own has `CLIENT TRACKING ON BCAST PREFIX <p>at:` with
 * the invalidation messages redirected to itself and subscribed to, so every change of an access
 * token key (revocation on any replica, deletion, expiry, eviction, FLUSHDB) is announced on it.
 *
 * The cache serves nothing unless that connection is up with tracking on: it starts empty and off,
 * turns on after the SUBSCRIBE is answered (on every connection, a reconnection included), and
 * is emptied and off again the moment the connection closes or a heartbeat ping fails. A read
 * that was sent before the cache turned on, or for which an invalidation arrived while it was in
 * flight (the reply and the invalidation travel on different connections, in either order), is
 * not kept. Writes by this store forget their keys at once, without waiting for the message.
 */
export class TokenCache {
  readonly #conn: Redis
  readonly #prefix: string
  readonly #max: number
  readonly #entries = new Map<string, Entry>()
  readonly #pending = new Map<string, Pending>()
  readonly #heartbeat: NodeJS.Timeout
  /** Heartbeats an entry lives: it is served for at most `maxAgeMs` (the clock is the heartbeat, no call per read). */
  readonly #lifeTicks: number
  #tick = 0
  #on = false
  /** Bumped whenever the cache turns off or is flushed: a read from an earlier epoch is not kept. */
  #epoch = 0
  #closed = false
  #pinging = false
  /** The message of the last failure, for operators. */
  #lastError: string | undefined

  /**
   * `source`: the store's client, duplicated (RESP2, no offline queue) into the tracking
   * connection; `keyPrefix`: the full prefix of access-token keys (`<prefix>at:`).
   */
  constructor (source: Redis, keyPrefix: string, timeoutMs: number, opts: TokenCacheOptions = {}) {
    const { maxEntries: max, maxAgeMs: maxAge } = cacheSettings(opts)
    this.#max = max
    this.#prefix = keyPrefix
    this.#conn = source.duplicate({
      // Invalidations reach a RESP2 connection as Pub/Sub messages; ioredis drops RESP3 `invalidate` pushes.
      protocol: 2,
      autoResubscribe: false,
      enableOfflineQueue: false,
      enableAutoPipelining: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 1,
      commandTimeout: timeoutMs,
      keyPrefix: '',
      lazyConnect: false,
      connectionName: 'mcp-oauth-token-cache'
    })
    this.#conn.on('error', (err: Error) => { this.#lastError = err.message })
    this.#conn.on('ready', this.#setUp)
    this.#conn.on('close', this.#off)
    this.#conn.on('end', this.#off)
    this.#conn.on('messageBuffer', this.#onMessage)
    const every = Math.min(1000, maxAge / 2)
    this.#lifeTicks = Math.max(1, Math.floor(maxAge / every))
    this.#heartbeat = setInterval(this.#ping, every)
    this.#heartbeat.unref()
  }

  /** Whether records are served from memory right now, and how many are kept. */
  get status (): { active: boolean, entries: number, lastError?: string } {
    return {
      active: this.#on,
      entries: this.#entries.size,
      ...(this.#lastError !== undefined ? { lastError: this.#lastError } : {})
    }
  }

  /**
   * The record, a copy, when it is kept (null when kept but expired at `now`); undefined when
   * only Redis knows.
   */
  get (hash: string, now: number): AccessTokenRecord | null | undefined {
    const entry = this.#entries.get(hash)
    if (entry === undefined) return undefined
    if (this.#tick >= entry.until) {
      this.#entries.delete(hash)
      return undefined
    }
    const record = entry.record
    if (record.expiresAt <= now) return null
    return { ...record, scopes: record.scopes.slice() }
  }

  /** A read of `hash` is about to be sent: the ticket to pass to `end`, or -1 when the result cannot be kept. */
  begin (hash: string): number {
    if (!this.#on) return -1
    const pending = this.#pending.get(hash)
    if (pending === undefined) this.#pending.set(hash, { n: 1, dirty: false })
    else pending.n++
    return this.#epoch
  }

  /** The read begun with `ticket` answered `record`: kept when nothing changed meanwhile. */
  end (hash: string, ticket: number, record: AccessTokenRecord | null): void {
    if (ticket < 0) return
    const pending = this.#pending.get(hash)
    if (pending === undefined) return
    if (--pending.n === 0) this.#pending.delete(hash)
    if (record === null || pending.dirty || ticket !== this.#epoch || !this.#on) return
    if (this.#entries.size >= this.#max) {
      const oldest = this.#entries.keys().next().value
      if (oldest !== undefined) this.#entries.delete(oldest)
    }
    this.#entries.set(hash, { record, until: this.#tick + this.#lifeTicks })
  }

  /** This store changed or removed the token: drop it now (the invalidation message follows). */
  forget (hash: string): void {
    this.#entries.delete(hash)
    const pending = this.#pending.get(hash)
    if (pending !== undefined) pending.dirty = true
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#heartbeat)
    this.#off()
    this.#conn.disconnect()
  }

  // ---- the tracking connection ----------------------------------------------------------

  /** Tracking on, invalidations redirected to this same connection, subscribed: then serve. */
  readonly #setUp = (): void => {
    const conn = this.#conn
    const run = async (): Promise<void> => {
      const id = await conn.client('ID')
      await conn.call('CLIENT', 'TRACKING', 'ON', 'REDIRECT', String(id), 'BCAST', 'PREFIX', this.#prefix)
      await conn.subscribe(INVALIDATE)
    }
    run().then(() => {
      if (this.#closed || conn.status !== 'ready') return
      this.#epoch++
      this.#on = true
    }, (err: unknown) => {
      // Redis before 6, or tracking refused: no cache on this connection; every read goes to Redis.
      this.#lastError = err instanceof Error ? err.message : String(err)
    })
  }

  /** Off and empty: nothing seen from here on can be trusted until tracking is set up again. */
  readonly #off = (): void => {
    this.#on = false
    this.#epoch++
    this.#entries.clear()
    this.#pending.clear()
  }

  readonly #onMessage = (channel: Buffer | string, message: unknown): void => {
    if (String(channel) !== INVALIDATE) return
    // null: the whole database changed (FLUSHDB, FLUSHALL), or the server lost track.
    if (!Array.isArray(message)) {
      this.#epoch++
      this.#entries.clear()
      for (const pending of this.#pending.values()) pending.dirty = true
      return
    }
    const skip = this.#prefix.length
    for (const key of message) {
      const k = String(key)
      if (k.startsWith(this.#prefix)) this.forget(k.slice(skip))
    }
  }

  readonly #ping = (): void => {
    this.#tick++
    if (!this.#on || this.#pinging) return
    this.#pinging = true
    const conn = this.#conn
    conn.ping().then(() => { this.#pinging = false }, (err: unknown) => {
      this.#pinging = false
      this.#lastError = err instanceof Error ? err.message : String(err)
      // Invalidations may be lost on a connection that does not answer: start over.
      this.#off()
      if (!this.#closed) conn.disconnect(true)
    })
  }
}
