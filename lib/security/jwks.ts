import { createPublicKey, type JsonWebKey } from 'node:crypto'
import { createLocalJWKSet, errors as joseErrors, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose'
import { errors } from '../errors.js'
import { cacheSeconds, type SafeFetcher } from './fetch.js'

/**
 * Public key sets fetched from a `jwks_uri` (a client's, an enterprise IdP's), through the SSRF-safe
 * fetcher, cached by their HTTP caching headers within [minCacheSeconds, maxCacheSeconds].
 *
 * - A `kid` the cached set does not know makes one new fetch (keys rotate), at most once per
 *   `refetchAfterSeconds` for one URL: a stream of made-up `kid`s cannot make this server fetch on
 *   every request.
 * - One fetch per URL at a time: concurrent requests wait for the same answer.
 * - When a refetch fails, the set fetched before is used while it is younger than maxCacheSeconds
 *   (an IdP's short outage does not refuse every assertion); with none, the failure is the answer.
 * - At most `maxEntries` URLs are kept (least recently used go first).
 */

export interface RemoteKeySetsOptions {
  fetcher: SafeFetcher
  now: () => number
  /** Default 300 s. */
  minCacheSeconds?: number
  /** Default 86400 s. */
  maxCacheSeconds?: number
  /** Default 30 s. */
  refetchAfterSeconds?: number
  /** Default 1000. */
  maxEntries?: number
}

interface Entry {
  keys: JWTVerifyGetKey
  fetchedAt: number
  freshUntil: number
}

/** Most key sets fetched at once; one more is refused (the caller retries), never queued. */
const MAX_CONCURRENT_FETCHES = 16

/** Most keys a set may hold. */
const MAX_KEYS = 100

/** A key set's document as jose takes it, or a reason it is not one. */
export function parseKeySet (body: Buffer | string): JSONWebKeySet {
  let value: unknown
  try {
    value = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'))
  } catch {
    throw new errors.FETCH_FAILED('the key set is not JSON')
  }
  const problem = shapeProblem(value)
  if (problem !== undefined) throw new errors.FETCH_FAILED(problem)
  return value as JSONWebKeySet
}

/** What is wrong with the shape of a JWK Set, or undefined. */
function shapeProblem (value: unknown): string | undefined {
  const keys = (value as { keys?: unknown } | null)?.keys
  if (typeof value !== 'object' || value === null || !Array.isArray(keys)) return 'the key set has no "keys" array'
  if (keys.length > MAX_KEYS) return `the key set holds more than ${MAX_KEYS} keys`
  if (!keys.every(k => typeof k === 'object' && k !== null && !Array.isArray(k))) return 'a key of the set is not an object'
  return undefined
}

/** Members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']

/**
 * Why a client's inline `jwks` (options, registration, metadata document) cannot be its key set, or
 * undefined when it can: a JWK Set of at least one public asymmetric key, each one a key Node can
 * import. A private member is refused outright: whoever published it has leaked the key.
 */
export function publicKeySetProblem (value: unknown): string | undefined {
  const shape = shapeProblem(value)
  if (shape !== undefined) return shape
  const keys = (value as { keys: Array<Record<string, unknown>> }).keys
  if (keys.length === 0) return 'the key set holds no key'
  for (const [i, key] of keys.entries()) {
    if (key.kty !== 'EC' && key.kty !== 'RSA' && key.kty !== 'OKP') return `key ${i} must be an EC, RSA or OKP public key (kty)`
    const secret = PRIVATE_MEMBERS.find(m => key[m] !== undefined)
    if (secret !== undefined) return `key ${i} holds the private member "${secret}": publish public keys only`
    try {
      createPublicKey({ key: key as JsonWebKey, format: 'jwk' })
    } catch {
      return `key ${i} is not a valid ${key.kty} public key`
    }
  }
  return undefined
}

export class RemoteKeySets {
  readonly #fetcher: SafeFetcher
  readonly #now: () => number
  readonly #minMs: number
  readonly #maxMs: number
  readonly #refetchMs: number
  readonly #maxEntries: number
  readonly #entries = new Map<string, Entry>()
  readonly #pending = new Map<string, Promise<Entry>>()

  constructor (opts: RemoteKeySetsOptions) {
    this.#fetcher = opts.fetcher
    this.#now = opts.now
    this.#minMs = (opts.minCacheSeconds ?? 300) * 1000
    this.#maxMs = (opts.maxCacheSeconds ?? 86400) * 1000
    this.#refetchMs = (opts.refetchAfterSeconds ?? 30) * 1000
    this.#maxEntries = opts.maxEntries ?? 1000
  }

  /** The key source for one URL, as jose's verify functions take it. */
  keys (uri: string): JWTVerifyGetKey {
    return async (header, token) => {
      let entry = await this.#current(uri)
      try {
        return await entry.keys(header, token)
      } catch (err) {
        if (!(err instanceof joseErrors.JWKSNoMatchingKey) || this.#now() - entry.fetchedAt < this.#refetchMs) throw err
        // An unknown kid: the keys may have rotated since the set was fetched.
        entry = await this.#load(uri, entry)
        return await entry.keys(header, token)
      }
    }
  }

  async #current (uri: string): Promise<Entry> {
    const entry = this.#entries.get(uri)
    if (entry !== undefined && entry.freshUntil > this.#now()) {
      // Least recently used goes first: a hit moves the URL to the end.
      this.#entries.delete(uri)
      this.#entries.set(uri, entry)
      return entry
    }
    return await this.#load(uri, entry)
  }

  /** Fetch the set once for everybody asking now; keep the one before when the fetch fails and it is young enough. */
  #load (uri: string, before: Entry | undefined): Promise<Entry> {
    const inFlight = this.#pending.get(uri)
    if (inFlight !== undefined) return inFlight
    if (this.#pending.size >= MAX_CONCURRENT_FETCHES) {
      return Promise.reject(new errors.FETCH_FAILED('too many key sets are being fetched right now; retry shortly'))
    }
    const pending = this.#fetch(uri).then(fresh => {
      this.#remember(uri, fresh)
      return fresh
    }, (err: unknown) => {
      if (before !== undefined && this.#now() - before.fetchedAt < this.#maxMs) return before
      throw err
    }).finally(() => this.#pending.delete(uri))
    this.#pending.set(uri, pending)
    return pending
  }

  async #fetch (uri: string): Promise<Entry> {
    const fetched = await this.#fetcher.get(new URL(uri))
    let keys: JWTVerifyGetKey
    try {
      keys = createLocalJWKSet(parseKeySet(fetched.body))
    } catch (err) {
      if (err instanceof joseErrors.JOSEError) throw new errors.FETCH_FAILED('the key set is not a valid JWK Set')
      throw err
    }
    const fetchedAt = this.#now()
    const lifetime = cacheSeconds(fetched.headers, this.#minMs / 1000, this.#maxMs / 1000) * 1000
    return { keys, fetchedAt, freshUntil: fetchedAt + lifetime }
  }

  #remember (uri: string, entry: Entry): void {
    this.#entries.delete(uri)
    for (const oldest of this.#entries.keys()) {
      if (this.#entries.size < this.#maxEntries) break
      this.#entries.delete(oldest)
    }
    this.#entries.set(uri, entry)
  }
}
