import { randomUUID } from 'node:crypto'
import type {
  AccessTokenRecord, ClientRecord, CodeRecord, ConsumeCodeResult, FlowRecord, GrantRecord,
  RefreshTokenRecord, RotateResult, Store, StoreStats
} from './types.js'

export interface MemoryStoreOptions {
  /** How often a sweep pass starts (ms). Default 30 s. */
  sweepIntervalMs?: number
  /** Longest the sweep may hold the event loop in one slice (ms). Default 4 ms. */
  sweepSliceMs?: number
  /** Clock for the sweep; the plugin's own clock is passed to each operation. */
  now?: () => number
}

interface GrantEntry {
  grant: GrantRecord
  /** Hashes of the family's tokens; pruned of dead entries as they grow. */
  access: string[]
  refresh: string[]
}

interface CodeEntry {
  code: CodeRecord
  usedAt?: number
  retainUntil: number
}

/** How many entries the sweep checks between two looks at the clock. */
const CHECKS_PER_CLOCK_READ = 512

/**
 * The embedded store: Maps, lazy expiry on read, and an incremental sweep that reclaims expired
 * records in short slices so the event loop is never held for long. Every operation runs without
 * an `await` between its read and its write, which is what makes take-once and compare-and-swap
 * atomic in one process.
 */
export class MemoryStore implements Store {
  readonly #grants = new Map<string, GrantEntry>()
  readonly #access = new Map<string, AccessTokenRecord>()
  readonly #refresh = new Map<string, RefreshTokenRecord>()
  readonly #clients = new Map<string, ClientRecord>()
  /** registeredFrom -> client ids, for per-address caps. */
  readonly #clientsFrom = new Map<string, Set<string>>()
  readonly #flows = new Map<string, FlowRecord>()
  readonly #codes = new Map<string, CodeEntry>()

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
    const entry = this.#grants.get(grant.grantId)
    if (entry) entry.grant = grant
    else this.#grants.set(grant.grantId, { grant, access: [], refresh: [] })
  }

  async getGrant (grantId: string, now: number): Promise<GrantRecord | null> {
    const entry = this.#liveGrant(grantId, now)
    return entry ? entry.grant : null
  }

  async updateGrantUpstream (grantId: string, upstream: string, now: number): Promise<boolean> {
    const entry = this.#liveGrant(grantId, now)
    if (!entry) return false
    entry.grant = { ...entry.grant, upstream }
    return true
  }

  async saveAccessToken (hash: string, token: AccessTokenRecord): Promise<void> {
    const entry = this.#grants.get(token.grantId)
    if (!entry) throw new Error('saveAccessToken: the grant does not exist')
    this.#access.set(hash, token)
    entry.access = pruned(entry.access, this.#access)
    entry.access.push(hash)
  }

  async getAccessToken (hash: string, now: number): Promise<AccessTokenRecord | null> {
    const token = this.#access.get(hash)
    if (!token) return null
    if (token.expiresAt <= now) {
      this.#access.delete(hash)
      return null
    }
    return token
  }

  async deleteAccessToken (hash: string): Promise<boolean> {
    return this.#access.delete(hash)
  }

  async saveRefreshToken (hash: string, token: RefreshTokenRecord): Promise<void> {
    const entry = this.#grants.get(token.grantId)
    if (!entry) throw new Error('saveRefreshToken: the grant does not exist')
    this.#refresh.set(hash, token)
    entry.refresh = pruned(entry.refresh, this.#refresh)
    entry.refresh.push(hash)
  }

  async getRefreshToken (hash: string, now: number): Promise<RefreshTokenRecord | null> {
    const token = this.#refresh.get(hash)
    if (!token) return null
    if (token.expiresAt <= now || !this.#liveGrant(token.grantId, now)) {
      this.#refresh.delete(hash)
      return null
    }
    return token
  }

  async rotateRefreshToken (
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    now: number,
    successor?: string
  ): Promise<RotateResult> {
    const previous = this.#refresh.get(oldHash)
    if (!previous || previous.expiresAt <= now) return { status: 'unknown' }
    const entry = this.#liveGrant(previous.grantId, now)
    if (!entry) return { status: 'unknown' }
    if (previous.rotatedAt !== undefined) return { status: 'already_rotated', previous }
    if (next.token.grantId !== previous.grantId) throw new Error('rotateRefreshToken: the successor must stay in the family')
    const rotated: RefreshTokenRecord = { ...previous, rotatedAt: now }
    if (successor !== undefined) rotated.successor = successor
    this.#refresh.set(oldHash, rotated)
    this.#refresh.set(next.hash, next.token)
    entry.refresh = pruned(entry.refresh, this.#refresh)
    entry.refresh.push(next.hash)
    return { status: 'rotated', previous }
  }

  async revokeGrant (grantId: string): Promise<boolean> {
    const entry = this.#grants.get(grantId)
    if (!entry) return false
    this.#dropGrant(grantId, entry)
    return true
  }

  async listGrants (filter: { userId: string } | { clientId: string }, now: number): Promise<string[]> {
    const ids: string[] = []
    for (const [id, entry] of this.#grants) {
      if (entry.grant.expiresAt <= now) continue
      const match = 'userId' in filter ? entry.grant.userId === filter.userId : entry.grant.clientId === filter.clientId
      if (match) ids.push(id)
    }
    return ids
  }

  // ---- clients --------------------------------------------------------------------------

  async saveClient (client: ClientRecord): Promise<void> {
    const previous = this.#clients.get(client.clientId)
    if (previous !== undefined) this.#unindexClient(previous)
    this.#clients.set(client.clientId, client)
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

  // ---- flows and codes ------------------------------------------------------------------

  async saveFlow (key: string, flow: FlowRecord): Promise<void> {
    this.#flows.set(key, flow)
  }

  async takeFlow (key: string, now: number): Promise<FlowRecord | null> {
    const flow = this.#flows.get(key)
    if (!flow) return null
    this.#flows.delete(key)
    return flow.expiresAt > now ? flow : null
  }

  async saveCode (hash: string, code: CodeRecord): Promise<void> {
    this.#codes.set(hash, { code, retainUntil: code.expiresAt })
  }

  async consumeCode (hash: string, now: number, retainUntil: number): Promise<ConsumeCodeResult> {
    const entry = this.#codes.get(hash)
    if (!entry) return { status: 'unknown' }
    if (entry.usedAt !== undefined) {
      if (entry.retainUntil <= now) {
        this.#codes.delete(hash)
        return { status: 'unknown' }
      }
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
    for (;;) {
      for (let i = 0; i < CHECKS_PER_CLOCK_READ; i++) {
        if (it.next().done) {
          this.#finishPass()
          return
        }
      }
      if (performance.now() >= deadline) break
    }
    this.#pending = setImmediate(() => { this.#slice() })
  }

  #finishPass (): void {
    this.#sweeping = undefined
    const resolve = this.#resolvePass
    this.#resolvePass = undefined
    this.#passDone = undefined
    resolve?.()
  }

  /** One step per record checked. `now` is fixed for the pass. */
  * #pass (now: number): Generator<void> {
    for (const [id, entry] of this.#grants) {
      if (entry.grant.expiresAt <= now) this.#dropGrant(id, entry)
      yield
    }
    for (const [hash, token] of this.#access) {
      if (token.expiresAt <= now) this.#access.delete(hash)
      yield
    }
    for (const [hash, token] of this.#refresh) {
      if (token.expiresAt <= now || !this.#grants.has(token.grantId)) this.#refresh.delete(hash)
      yield
    }
    for (const [key, flow] of this.#flows) {
      if (flow.expiresAt <= now) this.#flows.delete(key)
      yield
    }
    for (const [hash, entry] of this.#codes) {
      if (Math.max(entry.retainUntil, entry.code.expiresAt) <= now) this.#codes.delete(hash)
      yield
    }
    for (const [id, client] of this.#clients) {
      if (client.expiresAt !== undefined && client.expiresAt <= now) this.#dropClient(id)
      yield
    }
  }

  #liveGrant (grantId: string, now: number): GrantEntry | null {
    const entry = this.#grants.get(grantId)
    if (!entry) return null
    if (entry.grant.expiresAt <= now) {
      this.#dropGrant(grantId, entry)
      return null
    }
    return entry
  }

  #dropGrant (grantId: string, entry: GrantEntry): void {
    for (const hash of entry.access) this.#access.delete(hash)
    for (const hash of entry.refresh) this.#refresh.delete(hash)
    this.#grants.delete(grantId)
  }
}

/** Drop hashes whose record is gone; amortised so a long-lived family does not grow forever. */
function pruned (hashes: string[], records: Map<string, unknown>): string[] {
  if (hashes.length < 8) return hashes
  return hashes.filter(hash => records.has(hash))
}
