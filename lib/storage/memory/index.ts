import { randomUUID } from 'node:crypto'
import type {
  AccessTokenRecord, ClientRecord, CodeRecord, ConsumeCodeResult, FlowRecord, GrantRecord,
  RefreshTokenRecord, RotateResult, Store, StoreStats
} from '../contract.js'
import { GrantRevokedError } from '../contract.js'

export interface MemoryStoreOptions {
  /** How often a sweep pass starts (ms). Default 30 s. */
  sweepIntervalMs?: number
  /** Longest the sweep may hold the event loop in one slice (ms). Default 4 ms. */
  sweepSliceMs?: number
  /** Clock for the sweep; the plugin's own clock is passed to each operation. */
  now?: () => number
}

/**
 * Records are kept compact and handed out as fresh copies (as a Redis store does): a caller can
 * never change what the store holds by mutating what it got, and the store is free to share what
 * records have in common. With 100,000 live grants this is what decides the heap, so:
 *
 * - a grant and the hashes of its tokens are one object (no per-grant arrays: one hash of each
 *   kind is a plain string, a list only when a family has several live tokens of a kind);
 * - a token record points at its grant's record for the fields it shares with it (client, user,
 *   e-mail, resource) and keeps only its own (scopes, times); a token whose shared fields differ
 *   from its grant's is kept whole;
 * - client ids, resources and scope lists are interned: a thousand grants of one client share
 *   one string and one frozen array.
 */
class GrantEntry {
  grantId: string
  userId: string
  email: string | undefined
  clientId: string
  scopes: readonly string[]
  resource: string
  createdAt: number
  expiresAt: number
  upstream: string | undefined
  provider: string | undefined
  /** Hashes of the family's tokens; pruned of dead entries as they grow. */
  access: Hashes = undefined
  refresh: Hashes = undefined

  constructor (grant: GrantRecord, interned: Interner) {
    this.grantId = grant.grantId
    this.userId = grant.userId
    this.email = grant.email
    this.clientId = interned.string(grant.clientId)
    this.scopes = interned.scopes(grant.scopes)
    this.resource = interned.string(grant.resource)
    this.createdAt = grant.createdAt
    this.expiresAt = grant.expiresAt
    this.upstream = grant.upstream
    this.provider = grant.provider
  }

  record (): GrantRecord {
    const grant: GrantRecord = {
      grantId: this.grantId,
      userId: this.userId,
      clientId: this.clientId,
      scopes: copy(this.scopes),
      resource: this.resource,
      createdAt: this.createdAt,
      expiresAt: this.expiresAt
    }
    if (this.email !== undefined) grant.email = this.email
    if (this.upstream !== undefined) grant.upstream = this.upstream
    if (this.provider !== undefined) grant.provider = this.provider
    return grant
  }
}

/** A mutable copy for a caller (`slice()` of a frozen array takes V8's slow path: 30x slower). */
function copy (list: readonly string[]): string[] {
  const out = new Array<string>(list.length)
  for (let i = 0; i < list.length; i++) out[i] = list[i] as string
  return out
}

/** One hash, several, or none. */
export type Hashes = string | string[] | undefined

/** An access token whose client, user, e-mail and resource are its grant's. */
class AccessEntry {
  readonly grant: GrantEntry
  readonly scopes: readonly string[]
  readonly issuedAt: number
  readonly expiresAt: number

  constructor (grant: GrantEntry, token: AccessTokenRecord, interned: Interner) {
    this.grant = grant
    this.scopes = interned.scopes(token.scopes)
    this.issuedAt = token.issuedAt
    this.expiresAt = token.expiresAt
  }

  get grantId (): string {
    return this.grant.grantId
  }

  record (): AccessTokenRecord {
    const g = this.grant
    const token: AccessTokenRecord = {
      grantId: g.grantId,
      clientId: g.clientId,
      userId: g.userId,
      scopes: copy(this.scopes),
      resource: g.resource,
      issuedAt: this.issuedAt,
      expiresAt: this.expiresAt
    }
    if (g.email !== undefined) token.email = g.email
    return token
  }
}

/** A refresh token whose client is its grant's. */
class RefreshEntry {
  readonly grant: GrantEntry
  readonly scopes: readonly string[]
  readonly issuedAt: number
  readonly expiresAt: number
  rotatedAt: number | undefined

  constructor (grant: GrantEntry, token: RefreshTokenRecord, interned: Interner) {
    this.grant = grant
    this.scopes = interned.scopes(token.scopes)
    this.issuedAt = token.issuedAt
    this.expiresAt = token.expiresAt
    this.rotatedAt = token.rotatedAt
  }

  get grantId (): string {
    return this.grant.grantId
  }

  record (): RefreshTokenRecord {
    const token: RefreshTokenRecord = {
      grantId: this.grant.grantId,
      clientId: this.grant.clientId,
      scopes: copy(this.scopes),
      issuedAt: this.issuedAt,
      expiresAt: this.expiresAt
    }
    if (this.rotatedAt !== undefined) token.rotatedAt = this.rotatedAt
    return token
  }
}

/** A token record kept whole (its shared fields differ from its grant's), as a frozen copy. */
class WholeEntry<T extends AccessTokenRecord | RefreshTokenRecord> {
  readonly token: T

  constructor (token: T) {
    const kept: T = Object.assign({}, token, { scopes: Object.freeze(copy(token.scopes)) as string[] })
    this.token = Object.freeze(kept)
  }

  get grantId (): string {
    return this.token.grantId
  }

  get expiresAt (): number {
    return this.token.expiresAt
  }

  get rotatedAt (): number | undefined {
    return (this.token as RefreshTokenRecord).rotatedAt
  }

  record (): T {
    return Object.assign({}, this.token, { scopes: copy(this.token.scopes) })
  }
}

type StoredAccess = AccessEntry | WholeEntry<AccessTokenRecord>
type StoredRefresh = RefreshEntry | WholeEntry<RefreshTokenRecord>

/** How many distinct values an intern table holds before it starts afresh (values in use stay shared). */
const INTERN_LIMIT = 4096

/** Shares equal strings and equal scope lists between records. Bounded: past the limit it restarts. */
class Interner {
  readonly #strings = new Map<string, string>()
  /** Lists of one scope (the usual case) by that scope; longer lists by their JSON. */
  readonly #single = new Map<string, readonly string[]>()
  readonly #lists = new Map<string, readonly string[]>()
  static readonly #empty: readonly string[] = Object.freeze([])

  string (value: string): string {
    const known = this.#strings.get(value)
    if (known !== undefined) return known
    if (this.#strings.size >= INTERN_LIMIT) this.#strings.clear()
    this.#strings.set(value, value)
    return value
  }

  scopes (value: readonly string[]): readonly string[] {
    if (value.length === 0) return Interner.#empty
    const table = value.length === 1 ? this.#single : this.#lists
    const key = value.length === 1 ? value[0] as string : JSON.stringify(value)
    const known = table.get(key)
    if (known !== undefined) return known
    if (table.size >= INTERN_LIMIT) table.clear()
    const frozen = Object.freeze(value.map(scope => this.string(scope)))
    table.set(key, frozen)
    return frozen
  }
}

interface CodeEntry {
  code: CodeRecord
  usedAt?: number
  retainUntil: number
}

/** What a rotation keeps for the grace window, apart from the token record (and only until `until`). */
interface SuccessorEntry {
  info: string
  until: number
  replays: number
}

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
class ExpiryIndex {
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
 * The embedded store: Maps, lazy expiry on read, and an incremental sweep that reclaims expired
 * records in short slices so the event loop is never held for long. The sweep visits only records
 * whose expiry has come (an index by expiry time), so its cost follows expirations, not the
 * store's size. Every operation runs without an `await` between its read and its write, which is
 * what makes take-once and compare-and-swap atomic in one process.
 */
export class MemoryStore implements Store {
  readonly #grants = new Map<string, GrantEntry>()
  readonly #access = new Map<string, StoredAccess>()
  readonly #refresh = new Map<string, StoredRefresh>()
  readonly #interned = new Interner()
  readonly #clients = new Map<string, ClientRecord>()
  /** registeredFrom -> client ids, for per-address caps. */
  readonly #clientsFrom = new Map<string, Set<string>>()
  readonly #flows = new Map<string, FlowRecord>()
  readonly #codes = new Map<string, CodeEntry>()
  /** Refresh token hash -> its successor data, for the grace window only (then dropped, read or not). */
  readonly #successors = new Map<string, SuccessorEntry>()
  /** Grant id -> until when a grant of that id may not be written (revoked by a replayed code). */
  readonly #tombstones = new Map<string, number>()
  /** When each kind of record expires: what the sweep visits. */
  readonly #expiring = {
    grants: new ExpiryIndex(),
    access: new ExpiryIndex(),
    refresh: new ExpiryIndex(),
    successors: new ExpiryIndex(),
    tombstones: new ExpiryIndex(),
    flows: new ExpiryIndex(),
    codes: new ExpiryIndex(),
    clients: new ExpiryIndex()
  }

  readonly #now: () => number
  readonly #sliceMs: number
  #interval: NodeJS.Timeout | undefined
  #pending: NodeJS.Immediate | undefined
  #sweeping: Iterator<void> | undefined
  #closed = false

  constructor (opts: MemoryStoreOptions = {}) {
    this.#now = opts.now ?? Date.now
    this.#sliceMs = opts.sweepSliceMs ?? 4
    const every = opts.sweepIntervalMs ?? 30_000
    if (every > 0) {
      this.#interval = setInterval(() => { this.sweep() }, every)
      this.#interval.unref()
    }
  }

  // ---- grants and tokens ----------------------------------------------------------------

  async saveGrant (grant: GrantRecord): Promise<void> {
    this.#putGrant(grant)
  }

  async saveGrantWithTokens (
    grant: GrantRecord,
    access: { hash: string, token: AccessTokenRecord },
    refresh: { hash: string, token: RefreshTokenRecord }
  ): Promise<void> {
    this.#putGrant(grant)
    this.#putAccess(access.hash, access.token)
    this.#putRefresh(refresh.hash, refresh.token)
  }

  #putGrant (grant: GrantRecord): void {
    // Dated by the grant itself (its caller's clock), as every expiry here is.
    const revokedUntil = this.#tombstones.get(grant.grantId)
    if (revokedUntil !== undefined) {
      if (revokedUntil > grant.createdAt) throw new GrantRevokedError('saveGrant: the grant was revoked by a replayed authorization code')
      this.#tombstones.delete(grant.grantId)
    }
    const entry = new GrantEntry(grant, this.#interned)
    // Saved again: the family carries over; its tokens keep the grant fields they were saved with.
    const previous = this.#grants.get(grant.grantId)
    if (previous !== undefined) {
      entry.access = previous.access
      entry.refresh = previous.refresh
    }
    this.#grants.set(grant.grantId, entry)
    this.#expiring.grants.add(grant.grantId, entry.expiresAt)
  }

  async getGrant (grantId: string, now: number): Promise<GrantRecord | null> {
    const entry = this.#liveGrant(grantId, now)
    return entry ? entry.record() : null
  }

  async updateGrantUpstream (grantId: string, upstream: string, now: number): Promise<boolean> {
    const entry = this.#liveGrant(grantId, now)
    if (!entry) return false
    entry.upstream = upstream
    return true
  }

  async saveAccessToken (hash: string, token: AccessTokenRecord): Promise<void> {
    this.#putAccess(hash, token)
  }

  #putAccess (hash: string, token: AccessTokenRecord): void {
    const entry = this.#grants.get(token.grantId)
    if (!entry) throw new Error('saveAccessToken: the grant does not exist')
    const sharesGrant = token.clientId === entry.clientId && token.userId === entry.userId &&
      token.email === entry.email && token.resource === entry.resource
    this.#access.set(hash, sharesGrant ? new AccessEntry(entry, token, this.#interned) : new WholeEntry(token))
    this.#expiring.access.add(hash, token.expiresAt)
    entry.access = added(entry.access, hash, this.#access)
  }

  async getAccessToken (hash: string, now: number): Promise<AccessTokenRecord | null> {
    return this.#accessToken(hash, now)
  }

  getAccessTokenNow (hash: string, now: number): AccessTokenRecord | null {
    return this.#accessToken(hash, now)
  }

  #accessToken (hash: string, now: number): AccessTokenRecord | null {
    const token = this.#access.get(hash)
    if (!token) return null
    if (token.expiresAt <= now) {
      this.#access.delete(hash)
      return null
    }
    return token.record()
  }

  async deleteAccessToken (hash: string): Promise<boolean> {
    return this.#access.delete(hash)
  }

  async saveRefreshToken (hash: string, token: RefreshTokenRecord): Promise<void> {
    this.#putRefresh(hash, token)
  }

  #putRefresh (hash: string, token: RefreshTokenRecord): void {
    const entry = this.#grants.get(token.grantId)
    if (!entry) throw new Error('saveRefreshToken: the grant does not exist')
    this.#refresh.set(hash, this.#refreshEntry(entry, token))
    this.#expiring.refresh.add(hash, token.expiresAt)
    entry.refresh = added(entry.refresh, hash, this.#refresh)
    // A record saved whole keeps its successor data as long as the token (no window was given).
    if (token.successor === undefined) this.#successors.delete(hash)
    else this.#keepSuccessor(hash, token.successor, token.expiresAt)
  }

  /** The successor data lives beside the record, never in it (see #successors). */
  #refreshEntry (entry: GrantEntry, token: RefreshTokenRecord): StoredRefresh {
    if (token.clientId === entry.clientId) return new RefreshEntry(entry, token, this.#interned)
    const { successor: _s, ...whole } = token
    return new WholeEntry(whole)
  }

  #keepSuccessor (hash: string, info: string, until: number): void {
    this.#successors.set(hash, { info, until, replays: 0 })
    this.#expiring.successors.add(hash, until)
  }

  /** The successor data of a token while it is kept at `now`; dropped once its time is over. */
  #successorOf (hash: string, now: number): SuccessorEntry | undefined {
    const kept = this.#successors.get(hash)
    if (kept === undefined || kept.until > now) return kept
    this.#successors.delete(hash)
    return undefined
  }

  /** The record of a live token of a live grant, with its successor data while kept. */
  #liveRefresh (hash: string, now: number): RefreshTokenRecord | null {
    const token = this.#refresh.get(hash)
    if (!token) return null
    if (token.expiresAt <= now || !this.#liveGrant(token.grantId, now)) {
      this.#refresh.delete(hash)
      this.#successors.delete(hash)
      return null
    }
    const record = token.record()
    const kept = this.#successorOf(hash, now)
    if (kept !== undefined) record.successor = kept.info
    return record
  }

  async getRefreshToken (hash: string, now: number): Promise<RefreshTokenRecord | null> {
    return this.#liveRefresh(hash, now)
  }

  async replayRefreshToken (hash: string, now: number): Promise<{ successor: string, replays: number } | null> {
    const record = this.#liveRefresh(hash, now)
    if (record?.rotatedAt === undefined) return null
    const kept = this.#successorOf(hash, now)
    if (kept === undefined) return null
    kept.replays++
    return { successor: kept.info, replays: kept.replays }
  }

  async rotateRefreshToken (
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    now: number,
    successor?: string,
    successorUntil?: number
  ): Promise<RotateResult> {
    return this.#rotate(oldHash, next, now, successor, successorUntil)
  }

  async rotateRefreshTokenWithAccess (
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    access: { hash: string, token: AccessTokenRecord },
    now: number,
    successor?: string,
    successorUntil?: number
  ): Promise<RotateResult> {
    const result = this.#rotate(oldHash, next, now, successor, successorUntil)
    if (result.status === 'rotated') this.#putAccess(access.hash, access.token)
    return result
  }

  #rotate (
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    now: number,
    successor: string | undefined,
    successorUntil: number | undefined
  ): RotateResult {
    const stored = this.#refresh.get(oldHash)
    if (!stored || stored.expiresAt <= now) return { status: 'unknown' }
    const entry = this.#liveGrant(stored.grantId, now)
    if (!entry) return { status: 'unknown' }
    const previous = stored.record()
    if (previous.rotatedAt !== undefined) {
      const kept = this.#successorOf(oldHash, now)
      if (kept !== undefined) previous.successor = kept.info
      return { status: 'already_rotated', previous }
    }
    if (next.token.grantId !== previous.grantId) throw new Error('rotateRefreshToken: the successor must stay in the family')
    if (stored instanceof RefreshEntry) stored.rotatedAt = now
    else this.#refresh.set(oldHash, new WholeEntry({ ...previous, rotatedAt: now }))
    if (successor !== undefined) this.#keepSuccessor(oldHash, successor, successorUntil ?? stored.expiresAt)
    this.#refresh.set(next.hash, this.#refreshEntry(entry, next.token))
    this.#expiring.refresh.add(next.hash, next.token.expiresAt)
    entry.refresh = added(entry.refresh, next.hash, this.#refresh)
    return { status: 'rotated', previous }
  }

  async revokeGrant (grantId: string): Promise<boolean> {
    const entry = this.#grants.get(grantId)
    if (!entry) return false
    this.#dropGrant(grantId, entry)
    return true
  }

  /**
   * A scan of every grant (no per-user or per-client index: it would cost each grant memory), in
   * slices of `sweepSliceMs` like the sweep: at a million grants the scan takes tens of
   * milliseconds, which would otherwise hold every other request for that long.
   */
  async listGrants (filter: { userId: string } | { clientId: string }, now: number): Promise<string[]> {
    const ids: string[] = []
    const byUser = 'userId' in filter
    const wanted = byUser ? filter.userId : filter.clientId
    let deadline = performance.now() + this.#sliceMs
    let seen = 0
    for (const [id, entry] of this.#grants) {
      if (entry.expiresAt > now && (byUser ? entry.userId : entry.clientId) === wanted) ids.push(id)
      if ((++seen & 1023) === 0 && performance.now() >= deadline) {
        // Map iteration carries on correctly past grants added or removed meanwhile.
        await new Promise<void>(resolve => { setImmediate(resolve) })
        deadline = performance.now() + this.#sliceMs
      }
    }
    return ids
  }

  // ---- clients --------------------------------------------------------------------------

  async saveClient (client: ClientRecord): Promise<void> {
    const previous = this.#clients.get(client.clientId)
    if (previous !== undefined) this.#unindexClient(previous)
    this.#clients.set(client.clientId, client)
    if (client.expiresAt !== undefined) this.#expiring.clients.add(client.clientId, client.expiresAt)
    if (client.registeredFrom !== undefined) {
      let ids = this.#clientsFrom.get(client.registeredFrom)
      if (ids === undefined) this.#clientsFrom.set(client.registeredFrom, ids = new Set())
      ids.add(client.clientId)
    }
  }

  async countClientsFrom (address: string, now: number): Promise<number> {
    const ids = this.#clientsFrom.get(address)
    if (ids === undefined) return 0
    let n = 0
    for (const id of ids) if (await this.getClient(id, now) !== null) n++
    return n
  }

  #unindexClient (client: ClientRecord): void {
    if (client.registeredFrom === undefined) return
    const ids = this.#clientsFrom.get(client.registeredFrom)
    ids?.delete(client.clientId)
    if (ids?.size === 0) this.#clientsFrom.delete(client.registeredFrom)
  }

  #dropClient (clientId: string): boolean {
    const client = this.#clients.get(clientId)
    if (client === undefined) return false
    this.#unindexClient(client)
    return this.#clients.delete(clientId)
  }

  async getClient (clientId: string, now: number): Promise<ClientRecord | null> {
    const client = this.#clients.get(clientId)
    if (!client) return null
    if (client.expiresAt !== undefined && client.expiresAt <= now) {
      this.#dropClient(clientId)
      return null
    }
    return client
  }

  async deleteClient (clientId: string): Promise<boolean> {
    return this.#dropClient(clientId)
  }

  async renewClient (clientId: string, expiresAt: number, now: number): Promise<boolean> {
    const client = this.#clients.get(clientId)
    if (client === undefined) return false
    if (client.expiresAt !== undefined && client.expiresAt <= now) {
      this.#dropClient(clientId)
      return false
    }
    if (client.expiresAt !== undefined && client.expiresAt >= expiresAt) return true
    // A new record, not a change to the one callers may hold (getClient hands it out).
    this.#clients.set(clientId, { ...client, expiresAt })
    this.#expiring.clients.add(clientId, expiresAt)
    return true
  }

  // ---- flows and codes ------------------------------------------------------------------

  async saveFlow (key: string, flow: FlowRecord): Promise<void> {
    this.#flows.set(key, flow)
    this.#expiring.flows.add(key, flow.expiresAt)
  }

  async takeFlow (key: string, now: number): Promise<FlowRecord | null> {
    const flow = this.#flows.get(key)
    if (!flow) return null
    this.#flows.delete(key)
    return flow.expiresAt > now ? flow : null
  }

  async saveCode (hash: string, code: CodeRecord): Promise<void> {
    this.#codes.set(hash, { code, retainUntil: code.expiresAt })
    this.#expiring.codes.add(hash, code.expiresAt)
  }

  async consumeCode (hash: string, now: number, retainUntil: number): Promise<ConsumeCodeResult> {
    const entry = this.#codes.get(hash)
    if (!entry) return { status: 'unknown' }
    if (entry.usedAt !== undefined) {
      if (entry.retainUntil <= now) {
        this.#codes.delete(hash)
        return { status: 'unknown' }
      }
      // The grant this code issues (or is still issuing) may not be written from now on.
      this.#tombstones.set(entry.code.grantId, entry.retainUntil)
      this.#expiring.tombstones.add(entry.code.grantId, entry.retainUntil)
      return { status: 'reused', code: entry.code }
    }
    if (entry.code.expiresAt <= now) {
      this.#codes.delete(hash)
      return { status: 'unknown' }
    }
    entry.usedAt = now
    entry.retainUntil = Math.max(retainUntil, entry.code.expiresAt)
    return { status: 'ok', code: entry.code }
  }

  // ---- locks ----------------------------------------------------------------------------

  readonly #locks = new Map<string, { owner: string, until: number }>()

  async acquireLock (key: string, ttlMs: number): Promise<string | null> {
    const now = this.#now()
    const held = this.#locks.get(key)
    if (held !== undefined && held.until > now) return null
    const owner = randomUUID()
    this.#locks.set(key, { owner, until: now + ttlMs })
    return owner
  }

  async releaseLock (key: string, owner: string): Promise<void> {
    if (this.#locks.get(key)?.owner === owner) this.#locks.delete(key)
  }

  // ---- housekeeping ---------------------------------------------------------------------

  async stats (): Promise<StoreStats> {
    return {
      accessTokens: this.#access.size,
      refreshTokens: this.#refresh.size,
      grants: this.#grants.size,
      clients: this.#clients.size,
      flows: this.#flows.size,
      codes: this.#codes.size
    }
  }

  /**
   * Start a sweep pass unless one is running. The pass checks every record once, in slices of at
   * most `sweepSliceMs`, yielding to the event loop between slices. Resolves when the pass ends.
   */
  sweep (): Promise<void> {
    if (this.#closed) return Promise.resolve()
    if (this.#sweeping) return this.#passDone ?? Promise.resolve()
    this.#sweeping = this.#pass(this.#now())
    this.#passDone = new Promise(resolve => { this.#resolvePass = resolve })
    this.#slice()
    return this.#passDone
  }

  #passDone: Promise<void> | undefined
  #resolvePass: (() => void) | undefined

  async close (): Promise<void> {
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

  /**
   * One step per CHECKS_PER_STEP records checked (a generator resumed per record would cost more
   * than the check itself). `now` is fixed for the pass. Only the records in buckets of the expiry
   * index that have begun are checked: the expired go, the others (a code kept longer after its
   * use, a record saved again with a later expiry) are filed again under their current deadline.
   */
  * #pass (now: number): Generator<void> {
    const e = this.#expiring
    yield * this.#expire(e.grants, now, id => this.#grants.get(id)?.expiresAt, id => {
      const entry = this.#grants.get(id)
      if (entry !== undefined) this.#dropGrant(id, entry)
    })
    yield * this.#expire(e.access, now, hash => this.#access.get(hash)?.expiresAt, hash => this.#access.delete(hash))
    yield * this.#expire(e.refresh, now, hash => {
      const token = this.#refresh.get(hash)
      if (token === undefined) return undefined
      // A refresh token outlives neither its own expiry nor its grant.
      return this.#grants.has(token.grantId) ? token.expiresAt : -Infinity
    }, hash => this.#refresh.delete(hash))
    yield * this.#expire(e.successors, now, hash => this.#successors.get(hash)?.until, hash => this.#successors.delete(hash))
    yield * this.#expire(e.tombstones, now, id => this.#tombstones.get(id), id => this.#tombstones.delete(id))
    yield * this.#expire(e.flows, now, key => this.#flows.get(key)?.expiresAt, key => this.#flows.delete(key))
    yield * this.#expire(e.codes, now, hash => {
      const entry = this.#codes.get(hash)
      return entry === undefined ? undefined : Math.max(entry.retainUntil, entry.code.expiresAt)
    }, hash => this.#codes.delete(hash))
    yield * this.#expire(e.clients, now, id => this.#clients.get(id)?.expiresAt, id => this.#dropClient(id))
  }

  /** The due keys of one index: `deadline` is the record's (undefined when it is gone already). */
  * #expire (index: ExpiryIndex, now: number, deadline: (key: string) => number | undefined, drop: (key: string) => void): Generator<void> {
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

  #liveGrant (grantId: string, now: number): GrantEntry | null {
    const entry = this.#grants.get(grantId)
    if (!entry) return null
    if (entry.expiresAt <= now) {
      this.#dropGrant(grantId, entry)
      return null
    }
    return entry
  }

  #dropGrant (grantId: string, entry: GrantEntry): void {
    forEachHash(entry.access, hash => this.#access.delete(hash))
    forEachHash(entry.refresh, hash => { this.#refresh.delete(hash); this.#successors.delete(hash) })
    this.#grants.delete(grantId)
  }
}

/**
 * `hashes` with `hash` added. Hashes whose record is gone (expired and swept, deleted) are dropped
 * when the list's length reaches a power of two from 8 on (8, 16, 32...): on average at most two
 * lookups per addition however long the family lives, where checking the list on every addition
 * past 8 cost a lookup per member each time (a family refreshed hourly for a month keeps its 720
 * rotated refresh tokens for reuse detection). Exported for its test.
 */
export function added (hashes: Hashes, hash: string, records: ReadonlyMap<string, unknown>): Hashes {
  if (hashes === undefined || hashes === hash) return hash
  if (typeof hashes === 'string') return [hashes, hash]
  const n = hashes.length
  const list = n >= 8 && (n & (n - 1)) === 0 ? hashes.filter(h => records.has(h)) : hashes
  list.push(hash)
  return list
}

function forEachHash (hashes: Hashes, fn: (hash: string) => void): void {
  if (hashes === undefined) return
  if (typeof hashes === 'string') fn(hashes)
  else for (const hash of hashes) fn(hash)
}
