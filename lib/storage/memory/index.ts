import { randomUUID } from 'node:crypto'
import type {
  AccessTokenRecord, ClientRecord, CodeRecord, ConsumeCodeResult, FlowRecord, GrantRecord,
  RefreshTokenRecord, RotateResult, Store, StoreStats
} from '../contract.js'
import { GrantRevokedError } from '../../errors.js'
import { errors } from '../../errors.js'
import {
  AccessEntry, GrantEntry, Interner, RefreshEntry, WholeEntry, added, forEachHash,
  type StoredAccess, type StoredRefresh, type SuccessorEntry
} from './records.js'
import { ClientTable } from './clients.js'
import { CodeTable } from './codes.js'
import { ExpiryIndex, Sweeper, expire } from './sweep.js'

export interface MemoryStoreOptions {
  /** How often a sweep pass starts (ms). Default 30 s. */
  sweepIntervalMs?: number
  /** Longest the sweep may hold the event loop in one slice (ms). Default 4 ms. */
  sweepSliceMs?: number
  /** Clock for the sweep; the plugin's own clock is passed to each operation. */
  now?: () => number
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
  readonly #clients = new ClientTable()
  readonly #flows = new Map<string, FlowRecord>()
  readonly #codes = new CodeTable()
  /** Used assertion ids (`consumeAssertionId`) -> until when they are remembered. */
  readonly #assertionIds = new Map<string, number>()
  /** Refresh token hash -> its successor data, for the grace window only (then dropped, read or not). */
  readonly #successors = new Map<string, SuccessorEntry>()
  /** When each kind of record expires: what the sweep visits. */
  readonly #expiring = {
    grants: new ExpiryIndex(),
    access: new ExpiryIndex(),
    refresh: new ExpiryIndex(),
    successors: new ExpiryIndex(),
    flows: new ExpiryIndex(),
    assertionIds: new ExpiryIndex()
  }

  readonly #now: () => number
  readonly #sliceMs: number
  readonly #sweeper: Sweeper

  constructor (opts: MemoryStoreOptions = {}) {
    this.#now = opts.now ?? Date.now
    this.#sliceMs = opts.sweepSliceMs ?? 4
    this.#sweeper = new Sweeper(now => this.#pass(now), { now: this.#now, sliceMs: this.#sliceMs, everyMs: opts.sweepIntervalMs ?? 30_000 })
  }

  // ---- grants and tokens ----------------------------------------------------------------

  async saveGrant (grant: GrantRecord): Promise<void> {
    this.#putGrant(grant)
  }

  async saveGrantWithTokens (
    grant: GrantRecord,
    access: { hash: string, token: AccessTokenRecord },
    refresh?: { hash: string, token: RefreshTokenRecord }
  ): Promise<void> {
    const entry = this.#putGrant(grant)
    // A token naming another grant than the one saved is looked up (and refused when there is none).
    this.#putAccess(access.hash, access.token, access.token.grantId === grant.grantId ? entry : undefined)
    if (refresh !== undefined) this.#putRefresh(refresh.hash, refresh.token, refresh.token.grantId === grant.grantId ? entry : undefined)
  }

  #putGrant (grant: GrantRecord): GrantEntry {
    if (!this.#codes.mayWriteGrant(grant.grantId, grant.createdAt)) {
      throw new GrantRevokedError('saveGrant: the grant was revoked by a replayed authorization code')
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
    return entry
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

  /** `entry`: the token's grant when the caller holds it (saved in the same call). */
  #putAccess (hash: string, token: AccessTokenRecord, entry = this.#grants.get(token.grantId)): void {
    if (!entry) throw new errors.STORE_NO_GRANT('saveAccessToken')
    const sharesGrant = token.clientId === entry.clientId && token.userId === entry.userId &&
      token.email === entry.email && token.resource === entry.resource && token.subjectType === entry.subjectType
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

  #putRefresh (hash: string, token: RefreshTokenRecord, entry = this.#grants.get(token.grantId)): void {
    if (!entry) throw new errors.STORE_NO_GRANT('saveRefreshToken')
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
    if (next.token.grantId !== previous.grantId) throw new errors.STORE_FOREIGN_SUCCESSOR()
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
    this.#clients.save(client)
  }

  async countClientsFrom (address: string, now: number): Promise<number> {
    return this.#clients.countFrom(address, now)
  }

  async getClient (clientId: string, now: number): Promise<ClientRecord | null> {
    return this.#clients.get(clientId, now)
  }

  async deleteClient (clientId: string): Promise<boolean> {
    return this.#clients.delete(clientId)
  }

  async renewClient (clientId: string, expiresAt: number, now: number): Promise<boolean> {
    return this.#clients.renew(clientId, expiresAt, now)
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
    this.#codes.save(hash, code)
  }

  async consumeCode (hash: string, now: number, retainUntil: number): Promise<ConsumeCodeResult> {
    return this.#codes.consume(hash, now, retainUntil)
  }

  async consumeAssertionId (key: string, expiresAt: number, now: number): Promise<boolean> {
    const until = this.#assertionIds.get(key)
    if (until !== undefined && until > now) return false
    this.#assertionIds.set(key, expiresAt)
    this.#expiring.assertionIds.add(key, expiresAt)
    return true
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
    return this.#sweeper.run()
  }

  async close (): Promise<void> {
    this.#sweeper.close()
  }

  /** One sweep pass: the records whose expiry index bucket has begun at `now` (see `expire`). */
  * #pass (now: number): Generator<void> {
    const e = this.#expiring
    yield * expire(e.grants, now, id => this.#grants.get(id)?.expiresAt, id => {
      const entry = this.#grants.get(id)
      if (entry !== undefined) this.#dropGrant(id, entry)
    })
    yield * expire(e.access, now, hash => this.#access.get(hash)?.expiresAt, hash => this.#access.delete(hash))
    yield * expire(e.refresh, now, hash => {
      const token = this.#refresh.get(hash)
      if (token === undefined) return undefined
      // A refresh token outlives neither its own expiry nor its grant.
      return this.#grants.has(token.grantId) ? token.expiresAt : -Infinity
    }, hash => this.#refresh.delete(hash))
    yield * expire(e.successors, now, hash => this.#successors.get(hash)?.until, hash => this.#successors.delete(hash))
    yield * expire(e.flows, now, key => this.#flows.get(key)?.expiresAt, key => this.#flows.delete(key))
    yield * expire(e.assertionIds, now, key => this.#assertionIds.get(key), key => this.#assertionIds.delete(key))
    yield * this.#codes.sweep(now)
    yield * this.#clients.sweep(now)
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
