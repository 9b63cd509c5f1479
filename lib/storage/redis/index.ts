import { randomUUID } from 'node:crypto'
import type { Redis, RedisOptions } from 'ioredis'
import type {
  AccessTokenRecord, ClientRecord, CodeRecord, ConsumeCodeResult, FlowRecord, GrantRecord,
  RefreshTokenRecord, RotateResult, Store, StoreStats
} from '../contract.js'
import { GrantRevokedError } from '../../errors.js'
import { errors } from '../../errors.js'
import { TokenCache, cacheSettings, type TokenCacheOptions } from './cache.js'
import { Connection } from './connection.js'
import { SCRIPTS } from './scripts.js'
import { CLIENT_SCRIPTS } from './client-scripts.js'
import { refreshBase, refreshRecord, strings, ttlOf } from './records.js'
import { countKeys } from './stats.js'

export { RedisStoreError } from '../../errors.js'

export interface RedisStoreOptions {
  /**
   * An ioredis instance you own. The store never quits it; `close()` only detaches the store's
   * listeners. Its own options decide queueing and retries; the store still bounds every
   * operation by `commandTimeoutMs`. Do not set ioredis `keyPrefix` on it: use `prefix`.
   */
  client?: Redis
  /** A `redis://` / `rediss://` URL; the store creates the client and quits it on `close()`. */
  url?: string
  /** Extra ioredis options for the client created from `url` (they override the defaults below). */
  redisOptions?: RedisOptions
  /** Prepended to every key. Default `mcp-oauth:`. Several stores may share a database by prefix. */
  prefix?: string
  /**
   * Longest time one operation may take, including the wait for a (re)connection (ms). Default
   * 500. A dead or stalled Redis turns into a rejected promise after this long, never a hang.
   */
  commandTimeoutMs?: number
  /**
   * The clock used to turn a record's `expiresAt` into a key TTL when the operation has no `now`
   * argument (saves). Pass the plugin's own clock. Default `Date.now`.
   */
  now?: () => number
  /**
   * Access-token records kept in this process and served without a round trip, exact through
   * Redis's invalidation messages (`CLIENT TRACKING`, Redis 6 or later, on one extra connection).
   * A revocation on another replica reaches this one when Redis's message does (normally well
   * under a millisecond; at worst a failed heartbeat later, about a second, when the extra
   * connection silently dies). `false` turns it off: every lookup is a GET. Default on.
   */
  cache?: TokenCacheOptions | false
}

/**
 * The shared store: every replica of the server points at the same Redis and sees the same
 * grants, tokens, clients, flows and codes.
 *
 * Atomicity: every operation that reads and then writes is one Lua script (EVALSHA, with EVAL as
 * the fallback after NOSCRIPT), and Redis runs a script to the end before it runs any other
 * command, so two callers on any number of connections or hosts cannot interleave inside it.
 *
 * Expiry: every record key gets a TTL derived from the record's `expiresAt`, so Redis itself
 * reclaims expired records and nothing ever scans on the request path. The TTL is relative
 * (`expiresAt - now`, with `now` the operation's argument or the `now` option), which keeps an
 * injected clock meaningful and is immune to skew between the app's and Redis's clocks. Reads
 * still compare `expiresAt` with the caller's `now`, exactly like the memory store.
 *
 * Bounded latency: every operation ends within `commandTimeoutMs`, a wait for the connection
 * included (see Connection in connection.ts).
 *
 * Limits: standalone Redis or Sentinel, not Cluster (scripts reach keys derived from values). An
 * operation that timed out after its command was sent may still have been applied; callers treat
 * it as failed, which for take-once and rotation fails closed. Redis replication is asynchronous:
 * a failover can lose the last acknowledged writes. Clients registered without `expiresAt` are
 * the only keys kept without TTL, because the contract keeps them until deleted.
 */
export class RedisStore implements Store {
  readonly #conn: Connection

  /** The connection, shared with @fastify/rate-limit so limits hold across replicas. */
  get rateLimitRedis (): Redis {
    return this.#conn.client
  }

  readonly #prefix: string
  readonly #now: () => number
  readonly #cache: TokenCache | undefined

  constructor (opts: RedisStoreOptions) {
    if ((opts.client === undefined) === (opts.url === undefined)) {
      throw new errors.REDIS_STORE_OPTION('pass exactly one of `client` (an ioredis instance) or `url`')
    }
    const timeout = opts.commandTimeoutMs ?? 500
    if (!Number.isFinite(timeout) || timeout <= 0) throw new errors.REDIS_STORE_OPTION('commandTimeoutMs must be a positive number')
    // Checked before a connection exists: a bad option must not leave one open.
    const cache = opts.cache === false ? undefined : cacheSettings(opts.cache)
    this.#prefix = opts.prefix ?? 'mcp-oauth:'
    this.#now = opts.now ?? Date.now
    this.#conn = new Connection(opts, timeout)
    this.#cache = cache === undefined ? undefined : new TokenCache(this.#conn.client, this.#prefix + 'at:', timeout, cache)
  }

  /** The local access-token cache: whether it serves right now, and how many records it keeps. */
  get cacheStatus (): { active: boolean, entries: number, lastError?: string } {
    return this.#cache?.status ?? { active: false, entries: 0 }
  }

  // ---- grants and tokens ----------------------------------------------------------------

  async saveGrant (grant: GrantRecord): Promise<void> {
    const { upstream, ...rest } = grant
    const p = this.#prefix
    const saved = await this.#conn.eval('saveGrant', SCRIPTS.saveGrant,
      [p + 'g:' + grant.grantId, p + 'gf:' + grant.grantId, p + 'gu:' + grant.userId, p + 'gc:' + grant.clientId],
      [JSON.stringify(rest), grant.expiresAt, grant.userId, grant.clientId, upstream ?? '',
        upstream === undefined ? '0' : '1', ttlOf(grant.expiresAt, this.#now()), grant.grantId, p])
    if (saved === 0) throw new GrantRevokedError('saveGrant: the grant was revoked by a replayed authorization code')
  }

  async saveGrantWithTokens (
    grant: GrantRecord,
    access: { hash: string, token: AccessTokenRecord },
    refresh?: { hash: string, token: RefreshTokenRecord }
  ): Promise<void> {
    const { upstream, ...rest } = grant
    const p = this.#prefix
    const now = this.#now()
    const keys = [p + 'g:' + grant.grantId, p + 'gf:' + grant.grantId, p + 'gu:' + grant.userId, p + 'gc:' + grant.clientId,
      p + 'at:' + access.hash]
    const args: Array<string | number> = [JSON.stringify(rest), grant.expiresAt, grant.userId, grant.clientId, upstream ?? '',
      upstream === undefined ? '0' : '1', ttlOf(grant.expiresAt, now), grant.grantId, p,
      'a:' + access.hash, ttlOf(access.token.expiresAt, now), JSON.stringify(access.token)]
    if (refresh !== undefined) {
      const r = refresh.token
      keys.push(p + 'rt:' + refresh.hash)
      args.push('r:' + refresh.hash, ttlOf(r.expiresAt, now), JSON.stringify(refreshBase(r)), r.expiresAt, r.grantId)
    }
    const saved = await this.#conn.eval('saveGrantWithTokens', SCRIPTS.saveGrantWithTokens, keys, args)
    this.#cache?.forget(access.hash)
    if (saved === 0) throw new GrantRevokedError('saveGrantWithTokens: the grant was revoked by a replayed authorization code')
  }

  async getGrant (grantId: string, now: number): Promise<GrantRecord | null> {
    const [json, upstream] = await this.#conn.op('getGrant', () => this.#conn.client.hmget(this.#prefix + 'g:' + grantId, 'r', 'u'))
    if (json == null) return null
    const grant = JSON.parse(json) as GrantRecord
    if (grant.expiresAt <= now) return null
    if (upstream != null) grant.upstream = upstream
    return grant
  }

  async updateGrantUpstream (grantId: string, upstream: string, now: number): Promise<boolean> {
    const done = await this.#conn.eval('updateGrantUpstream', SCRIPTS.updateUpstream, [this.#prefix + 'g:' + grantId], [upstream, now])
    return done === 1
  }

  async saveAccessToken (hash: string, token: AccessTokenRecord): Promise<void> {
    const p = this.#prefix
    const saved = await this.#conn.eval('saveAccessToken', SCRIPTS.saveToken,
      [p + 'at:' + hash, p + 'g:' + token.grantId, p + 'gf:' + token.grantId],
      ['a', 'a:' + hash, ttlOf(token.expiresAt, this.#now()), p, JSON.stringify(token)])
    this.#cache?.forget(hash)
    if (saved !== 1) throw new errors.STORE_NO_GRANT('saveAccessToken')
  }

  async getAccessToken (hash: string, now: number): Promise<AccessTokenRecord | null> {
    const cache = this.#cache
    if (cache === undefined) return await this.#fetchAccessToken(hash, now)
    const kept = cache.get(hash, now)
    if (kept !== undefined) return kept
    const ticket = cache.begin(hash)
    let token: AccessTokenRecord | null = null
    try {
      token = await this.#fetchAccessToken(hash, -Infinity)
    } finally {
      cache.end(hash, ticket, token)
    }
    return token === null || token.expiresAt <= now ? null : { ...token, scopes: token.scopes.slice() }
  }

  /**
   * From the local cache: the record (a copy), or null when it is kept but expired at `now`;
   * undefined when the cache does not have it (or is off), and then `getAccessToken` asks Redis.
   */
  getAccessTokenNow (hash: string, now: number): AccessTokenRecord | null | undefined {
    return this.#conn.closed ? undefined : this.#cache?.get(hash, now)
  }

  async #fetchAccessToken (hash: string, now: number): Promise<AccessTokenRecord | null> {
    const json = await this.#conn.op('getAccessToken', () => this.#conn.client.get(this.#prefix + 'at:' + hash))
    if (json == null) return null
    const token = JSON.parse(json) as AccessTokenRecord
    return token.expiresAt <= now ? null : token
  }

  async deleteAccessToken (hash: string): Promise<boolean> {
    this.#cache?.forget(hash)
    try {
      return (await this.#conn.op('deleteAccessToken', () => this.#conn.client.del(this.#prefix + 'at:' + hash))) === 1
    } finally {
      this.#cache?.forget(hash)
    }
  }

  async saveRefreshToken (hash: string, token: RefreshTokenRecord): Promise<void> {
    const p = this.#prefix
    const saved = await this.#conn.eval('saveRefreshToken', SCRIPTS.saveToken,
      [p + 'rt:' + hash, p + 'g:' + token.grantId, p + 'gf:' + token.grantId, p + 'rs:' + hash],
      ['r', 'r:' + hash, ttlOf(token.expiresAt, this.#now()), p, JSON.stringify(refreshBase(token)), token.expiresAt, token.grantId,
        token.rotatedAt ?? '', token.successor === undefined ? '0' : '1', token.successor ?? ''])
    if (saved !== 1) throw new errors.STORE_NO_GRANT('saveRefreshToken')
  }

  async getRefreshToken (hash: string, now: number): Promise<RefreshTokenRecord | null> {
    const reply = await this.#conn.eval('getRefreshToken', SCRIPTS.getRefresh, [this.#prefix + 'rt:' + hash, this.#prefix + 'rs:' + hash], [this.#prefix])
    if (reply == null) return null
    const [json, expiresAt, rotatedAt, hasSuccessor, successor, grantExpiresAt] = strings(reply)
    if (Number(expiresAt) <= now || grantExpiresAt === '' || Number(grantExpiresAt) <= now) return null
    return refreshRecord(json as string, rotatedAt as string, hasSuccessor === '1' ? successor : undefined)
  }

  async replayRefreshToken (hash: string, now: number): Promise<{ successor: string, replays: number } | null> {
    const p = this.#prefix
    const reply = await this.#conn.eval('replayRefreshToken', SCRIPTS.replayRefresh, [p + 'rt:' + hash, p + 'rs:' + hash], [now, p])
    if (reply == null) return null
    const [successor, replays] = strings(reply)
    return { successor: successor as string, replays: Number(replays) }
  }

  async rotateRefreshToken (
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    now: number,
    successor?: string,
    successorUntil?: number
  ): Promise<RotateResult> {
    return await this.#rotate('rotateRefreshToken', oldHash, next, undefined, now, successor, successorUntil)
  }

  async rotateRefreshTokenWithAccess (
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    access: { hash: string, token: AccessTokenRecord },
    now: number,
    successor?: string,
    successorUntil?: number
  ): Promise<RotateResult> {
    try {
      return await this.#rotate('rotateRefreshTokenWithAccess', oldHash, next, access, now, successor, successorUntil)
    } finally {
      this.#cache?.forget(access.hash)
    }
  }

  async #rotate (
    name: string,
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    access: { hash: string, token: AccessTokenRecord } | undefined,
    now: number,
    successor: string | undefined,
    successorUntil: number | undefined
  ): Promise<RotateResult> {
    const p = this.#prefix
    const keys = [p + 'rt:' + oldHash, p + 'rt:' + next.hash, p + 'rs:' + oldHash]
    const keep = successor === undefined ? '' : successorUntil === undefined ? 'token' : ttlOf(successorUntil, now)
    const args: Array<string | number> = [now, p, JSON.stringify(refreshBase(next.token)), next.token.expiresAt, next.token.grantId,
      ttlOf(next.token.expiresAt, now), keep, successor ?? '', 'r:' + next.hash]
    if (access !== undefined) {
      keys.push(p + 'at:' + access.hash)
      args.push('a:' + access.hash, ttlOf(access.token.expiresAt, now), JSON.stringify(access.token))
    }
    const reply = strings(await this.#conn.eval(name, SCRIPTS.rotate, keys, args))
    switch (reply[0]) {
      case 'rotated':
        return { status: 'rotated', previous: refreshRecord(reply[1] as string, '', undefined) }
      case 'already_rotated':
        return {
          status: 'already_rotated',
          previous: refreshRecord(reply[1] as string, reply[2] as string, reply[3] === '1' ? reply[4] : undefined)
        }
      case 'mismatch':
        throw new errors.STORE_FOREIGN_SUCCESSOR()
      default:
        return { status: 'unknown' }
    }
  }

  async revokeGrant (grantId: string): Promise<boolean> {
    const p = this.#prefix
    const reply = strings(await this.#conn.eval('revokeGrant', SCRIPTS.revoke, [p + 'g:' + grantId, p + 'gf:' + grantId], [p, grantId]))
    // The family's access tokens leave this process's cache now, not when Redis's message arrives.
    for (let i = 1; i < reply.length; i++) {
      const member = reply[i] as string
      if (member.startsWith('a:')) this.#cache?.forget(member.slice(2))
    }
    return reply[0] === '1'
  }

  async listGrants (filter: { userId: string } | { clientId: string }, now: number): Promise<string[]> {
    const p = this.#prefix
    const [key, field, value] = 'userId' in filter
      ? [p + 'gu:' + filter.userId, 'uid', filter.userId]
      : [p + 'gc:' + filter.clientId, 'cid', filter.clientId]
    return strings(await this.#conn.eval('listGrants', SCRIPTS.listGrants, [key], [p, field, value, now]))
  }

  // ---- clients --------------------------------------------------------------------------

  async saveClient (client: ClientRecord): Promise<void> {
    // A client without `expiresAt` never expires (static and registered clients the contract
    // keeps): no TTL, and SET clears one left by an earlier version of the record.
    const from = client.registeredFrom
    await this.#conn.eval('saveClient', CLIENT_SCRIPTS.saveClient, [this.#prefix + 'c:' + client.clientId], [
      JSON.stringify(client),
      client.expiresAt === undefined ? '' : ttlOf(client.expiresAt, this.#now()),
      from === undefined ? '0' : '1', from ?? '', client.clientId, this.#prefix,
      client.expiresAt === undefined ? '+inf' : client.expiresAt, this.#now()
    ])
  }

  async getClient (clientId: string, now: number): Promise<ClientRecord | null> {
    const json = await this.#conn.op('getClient', () => this.#conn.client.get(this.#prefix + 'c:' + clientId))
    if (json == null) return null
    const client = JSON.parse(json) as ClientRecord
    if (client.expiresAt !== undefined && client.expiresAt <= now) return null
    return client
  }

  async deleteClient (clientId: string): Promise<boolean> {
    const deleted = await this.#conn.eval('deleteClient', CLIENT_SCRIPTS.deleteClient, [this.#prefix + 'c:' + clientId], [this.#prefix, clientId])
    return deleted === 1
  }

  async renewClient (clientId: string, expiresAt: number, now: number): Promise<boolean> {
    const key = this.#prefix + 'c:' + clientId
    // Read, then swap only if unchanged; a concurrent save wins and the read starts again (bounded).
    for (let attempt = 0; attempt < 3; attempt++) {
      const json = await this.#conn.op('renewClient', () => this.#conn.client.get(key))
      if (json == null) return false
      const client = JSON.parse(json) as ClientRecord
      if (client.expiresAt !== undefined && client.expiresAt <= now) return false
      if (client.expiresAt !== undefined && client.expiresAt >= expiresAt) return true
      const swapped = await this.#conn.eval('renewClient', CLIENT_SCRIPTS.renewClient, [key], [
        json, JSON.stringify({ ...client, expiresAt }), ttlOf(expiresAt, now), this.#prefix, client.registeredFrom ?? '', clientId, expiresAt
      ])
      if (swapped === 1) return true
    }
    // Saved three times meanwhile: the client is live, and the next use renews it.
    return true
  }

  async countClientsFrom (address: string, now: number): Promise<number> {
    const n = await this.#conn.eval('countClientsFrom', CLIENT_SCRIPTS.countClientsFrom, [this.#prefix + 'cf:' + address], [this.#prefix, now])
    return Number(n)
  }

  // ---- locks ----------------------------------------------------------------------------

  async acquireLock (key: string, ttlMs: number): Promise<string | null> {
    const owner = randomUUID()
    const ok = await this.#conn.op('acquireLock', () => this.#conn.client.set(this.#prefix + 'lock:' + key, owner, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX'))
    return ok === 'OK' ? owner : null
  }

  async releaseLock (key: string, owner: string): Promise<void> {
    await this.#conn.eval('releaseLock', SCRIPTS.releaseLock, [this.#prefix + 'lock:' + key], [owner])
  }

  // ---- flows and codes ------------------------------------------------------------------

  async saveFlow (key: string, flow: FlowRecord): Promise<void> {
    await this.#conn.op('saveFlow', () =>
      this.#conn.client.set(this.#prefix + 'f:' + key, JSON.stringify(flow), 'PX', ttlOf(flow.expiresAt, this.#now())))
  }

  async takeFlow (key: string, now: number): Promise<FlowRecord | null> {
    const json = await this.#conn.eval('takeFlow', SCRIPTS.takeFlow, [this.#prefix + 'f:' + key], [])
    if (json == null) return null
    const flow = JSON.parse(String(json)) as FlowRecord
    return flow.expiresAt > now ? flow : null
  }

  async saveCode (hash: string, code: CodeRecord): Promise<void> {
    await this.#conn.eval('saveCode', SCRIPTS.saveCode, [this.#prefix + 'ac:' + hash],
      [JSON.stringify(code), code.expiresAt, ttlOf(code.expiresAt, this.#now())])
  }

  async consumeCode (hash: string, now: number, retainUntil: number): Promise<ConsumeCodeResult> {
    const [status, json] = strings(await this.#conn.eval('consumeCode', SCRIPTS.consumeCode, [this.#prefix + 'ac:' + hash], [now, retainUntil, this.#prefix]))
    if (status === 'ok' || status === 'reused') return { status, code: JSON.parse(json as string) as CodeRecord }
    return { status: 'unknown' }
  }

  async consumeAssertionId (key: string, expiresAt: number, now: number): Promise<boolean> {
    // SET NX: one writer wins across every replica; the key lives as long as the assertion could.
    const ttl = Math.max(1, Math.ceil(expiresAt - now))
    const set = await this.#conn.op('consumeAssertionId', () => this.#conn.client.set(this.#prefix + 'ai:' + key, '1', 'PX', ttl, 'NX'))
    return set === 'OK'
  }

  // ---- housekeeping ---------------------------------------------------------------------

  /** Approximate counts, for gauges (see countKeys). */
  async stats (): Promise<StoreStats> {
    return await countKeys(this.#conn, this.#prefix)
  }

  /** Quits the client when the store created it; an injected client is left open. */
  async close (): Promise<void> {
    // The connection first: from here on no operation starts.
    const closing = this.#conn.close()
    await this.#cache?.close()
    await closing
  }
}
