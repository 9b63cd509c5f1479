import type { AccessTokenRecord, GrantRecord, MachineSubject, RefreshTokenRecord } from '../contract.js'

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
export class GrantEntry {
  grantId: string
  userId: string
  subjectType: MachineSubject | undefined
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
    this.subjectType = grant.subjectType
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
    if (this.subjectType !== undefined) grant.subjectType = this.subjectType
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

/** An access token whose client, user (and subject type), e-mail and resource are its grant's. */
export class AccessEntry {
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
    if (g.subjectType !== undefined) token.subjectType = g.subjectType
    if (g.email !== undefined) token.email = g.email
    return token
  }
}

/** A refresh token whose client is its grant's. */
export class RefreshEntry {
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
export class WholeEntry<T extends AccessTokenRecord | RefreshTokenRecord> {
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

export type StoredAccess = AccessEntry | WholeEntry<AccessTokenRecord>
export type StoredRefresh = RefreshEntry | WholeEntry<RefreshTokenRecord>

/** How many distinct values an intern table holds before it starts afresh (values in use stay shared). */
const INTERN_LIMIT = 4096

/** Shares equal strings and equal scope lists between records. Bounded: past the limit it restarts. */
export class Interner {
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

/** What a rotation keeps for the grace window, apart from the token record (and only until `until`). */
export interface SuccessorEntry {
  info: string
  until: number
  replays: number
}

/**
 * `hashes` with `hash` added. Hashes whose record is gone (expired and swept, deleted) are dropped
 * when the list's length reaches a power of two from 8 on (8, 16, 32...): on average at most two
 * lookups per addition however long the family lives, where checking the list on every addition
 * past 8 cost a lookup per member each time (a family refreshed hourly for a month keeps its 720
 * rotated refresh tokens for reuse detection).
 */
export function added (hashes: Hashes, hash: string, records: ReadonlyMap<string, unknown>): Hashes {
  if (hashes === undefined || hashes === hash) return hash
  if (typeof hashes === 'string') return [hashes, hash]
  const n = hashes.length
  const list = n >= 8 && (n & (n - 1)) === 0 ? hashes.filter(h => records.has(h)) : hashes
  list.push(hash)
  return list
}

export function forEachHash (hashes: Hashes, fn: (hash: string) => void): void {
  if (hashes === undefined) return
  if (typeof hashes === 'string') fn(hashes)
  else for (const hash of hashes) fn(hash)
}
