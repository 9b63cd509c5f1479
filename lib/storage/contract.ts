/**
 * The storage contract. Three interfaces (tokens, clients, flows); one class may implement all
 * three. Times are epoch milliseconds. Every operation that decides on expiry takes `now`, so the
 * caller's clock (injected in tests) is the only clock. Credentials arrive already hashed: a store
 * never sees a plaintext token, code or secret.
 *
 * Operations whose name says "take", "consume", "rotate" or "revoke" must be atomic: two callers
 * racing on the same key must observe exactly one winner.
 */

export type ClientAuthMethod = 'none' | 'client_secret_basic' | 'client_secret_post'

export interface ClientRecord {
  clientId: string
  /** SHA-256 of the client secret; absent for public clients. */
  clientSecretHash?: string
  /** Epoch seconds; 0 means the secret never expires (RFC 7591). */
  clientSecretExpiresAt?: number
  /** SHA-256 of the RFC 7592 registration access token. */
  registrationTokenHash?: string
  redirectUris: string[]
  tokenEndpointAuthMethod: ClientAuthMethod
  grantTypes: string[]
  responseTypes: string[]
  applicationType: 'web' | 'native'
  clientName?: string
  scope?: string
  /** Other registered metadata, echoed back as registered (client_uri, logo_uri, contacts, ...). */
  metadata: Record<string, unknown>
  /** Epoch seconds. */
  clientIdIssuedAt: number
  /** How the client came to exist. */
  source: 'dcr' | 'static' | 'cimd'
  /** The address that registered it, for per-IP caps. Never exposed. */
  registeredFrom?: string
  /**
   * Registered with the initial access token (registration mode "token"). Without it, RFC 7592
   * updates stay within what a registration without the token may hold (trusted schemes only).
   */
  registeredWithToken?: boolean
  /** Epoch ms; unused dynamic clients may expire. */
  expiresAt?: number
  /** This client's refresh grace window (static clients' `refresh_grace_seconds`); the plugin's when absent. */
  refreshGraceSeconds?: number
}

/** One authorization in progress between the consent page and the upstream callback. */
export interface FlowRecord {
  clientId: string
  redirectUri: string
  /** The client's own `state`, returned to it unchanged. */
  state?: string
  codeChallenge: string
  codeChallengeMethod: 'S256' | 'plain'
  scopes: string[]
  resource: string
  /** Our own PKCE verifier and nonce for the upstream leg; never the client's. */
  upstreamVerifier: string
  upstreamNonce?: string
  /** SHA-256 of the browser-binding secret held in the approving browser's cookie. */
  browserBinding: string
  createdAt: number
  expiresAt: number
}

/** An issued authorization code, bound to everything the token request must repeat. */
export interface CodeRecord {
  clientId: string
  redirectUri: string
  codeChallenge: string
  codeChallengeMethod: 'S256' | 'plain'
  scopes: string[]
  resource: string
  /** Id the grant will have once the code is exchanged; a replayed code revokes that grant. */
  grantId: string
  userId: string
  email?: string
  /** Upstream tokens, serialised (encrypted when a key ring is configured), moved into the grant. */
  upstream?: string
  provider?: string
  issuedAt: number
  expiresAt: number
}

export type ConsumeCodeResult =
  | { status: 'ok', code: CodeRecord }
  /** Presented before: the caller revokes what the first use issued. */
  | { status: 'reused', code: CodeRecord }
  | { status: 'unknown' }

/**
 * Who a grant or token speaks for: absent for a user; 'client' when the client itself is the
 * subject (client credentials), and then `userId` holds the client id.
 */
export type MachineSubject = 'client'

/** A grant: one user's authorization of one client for one resource; also the refresh family. */
export interface GrantRecord {
  grantId: string
  userId: string
  /** 'client': a machine grant (no user; `userId` is the client id). Absent: a user's. */
  subjectType?: MachineSubject
  email?: string
  clientId: string
  scopes: string[]
  resource: string
  createdAt: number
  /** Absolute end of the family: no refresh token outlives it. */
  expiresAt: number
  /** Upstream provider tokens, serialised (encrypted when a key ring is configured). */
  upstream?: string
  /** Name of the provider that authenticated the user. */
  provider?: string
}

/** What the guard needs, denormalised so that validation is one lookup. */
export interface AccessTokenRecord {
  grantId: string
  clientId: string
  userId: string
  /** As the grant's: 'client' for a machine subject, absent for a user. */
  subjectType?: MachineSubject
  email?: string
  scopes: string[]
  resource: string
  issuedAt: number
  expiresAt: number
}

export interface RefreshTokenRecord {
  grantId: string
  clientId: string
  scopes: string[]
  issuedAt: number
  expiresAt: number
  /** Set once the token has been exchanged; it then only serves reuse detection and grace. */
  rotatedAt?: number
  /**
   * Opaque, store-kept data about the successor (the caller decides; never enough on its own to
   * rebuild a token). Kept only until the `successorUntil` given at rotation, then dropped.
   */
  successor?: string
}

export type RotateResult =
  /** This call won: the old token is now rotated and the new one stored. */
  | { status: 'rotated', previous: RefreshTokenRecord }
  /** Somebody rotated it before; nothing was written. */
  | { status: 'already_rotated', previous: RefreshTokenRecord }
  /** Unknown, expired, or its family is gone; nothing was written. */
  | { status: 'unknown' }

export interface TokenStore {
  /** Throws GrantRevokedError for an id a replayed code revoked in advance (see consumeCode). */
  saveGrant (grant: GrantRecord): Promise<void>
  getGrant (grantId: string, now: number): Promise<GrantRecord | null>
  /** Replace the upstream blob of a live grant; false when the grant is gone. */
  updateGrantUpstream (grantId: string, upstream: string, now: number): Promise<boolean>

  /** The grant must exist; the token joins its family. */
  saveAccessToken (hash: string, token: AccessTokenRecord): Promise<void>
  getAccessToken (hash: string, now: number): Promise<AccessTokenRecord | null>
  /**
   * Optional, because it is a cache and not an operation: the `getAccessToken` lookup, answered
   * synchronously from this process's memory (the memory store always answers; the Redis store
   * answers from its local cache). `undefined` means "not known without I/O": the caller then uses
   * `getAccessToken`. A record or null returned here must be what `getAccessToken` would answer.
   * The guard tries it first, so a request it answers passes without a promise.
   */
  getAccessTokenNow? (hash: string, now: number): AccessTokenRecord | null | undefined
  deleteAccessToken (hash: string): Promise<boolean>

  saveRefreshToken (hash: string, token: RefreshTokenRecord): Promise<void>
  /**
   * saveGrant, then saveAccessToken and saveRefreshToken for it, in one call (what a code exchange
   * writes; one round trip for a remote store). Without `refresh`, the grant and its access token
   * only (grants that issue no refresh token). Like saveGrant, it throws GrantRevokedError (and
   * writes nothing) for an id revoked in advance.
   */
  saveGrantWithTokens (
    grant: GrantRecord,
    access: { hash: string, token: AccessTokenRecord },
    refresh?: { hash: string, token: RefreshTokenRecord }
  ): Promise<void>
  /** Returns rotated tokens too (with `rotatedAt`), until they expire, for reuse detection. */
  getRefreshToken (hash: string, now: number): Promise<RefreshTokenRecord | null>
  /**
   * Compare-and-swap: if `oldHash` is live and not yet rotated, mark it rotated at `now` (keeping
   * `successor` until `successorUntil`, or as long as the token when that is absent) and store
   * `next` in the same family, atomically. N concurrent callers: one wins.
   */
  rotateRefreshToken (
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    now: number,
    successor?: string,
    successorUntil?: number
  ): Promise<RotateResult>
  /**
   * rotateRefreshToken that also saves the new access token (into the family), in the same atomic
   * step and only when the rotation happens (`rotated`): a lost race leaves no access token behind.
   */
  rotateRefreshTokenWithAccess (
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    access: { hash: string, token: AccessTokenRecord },
    now: number,
    successor?: string,
    successorUntil?: number
  ): Promise<RotateResult>
  /**
   * One replay of a rotated token inside its grace window. Atomically counts it and returns the
   * kept `successor` with the count so far (1 for the first replay), or null when the token is not
   * a live rotated one or its successor is no longer kept. The count is what caps replays across
   * replicas.
   */
  replayRefreshToken (hash: string, now: number): Promise<{ successor: string, replays: number } | null>

  /** Remove a grant with every access and refresh token of its family. False when already gone. */
  revokeGrant (grantId: string): Promise<boolean>
  /** Grant ids of one user or one client (for sign-out everywhere). */
  listGrants (filter: { userId: string } | { clientId: string }, now: number): Promise<string[]>
}

export interface ClientStore {
  saveClient (client: ClientRecord): Promise<void>
  getClient (clientId: string, now: number): Promise<ClientRecord | null>
  deleteClient (clientId: string): Promise<boolean>
  /**
   * A use of a client: move its expiry to `expiresAt` when that is later (a client without one gets
   * it), with whatever else it keeps (the per-address count follows). Never lost against a concurrent
   * saveClient, nor loses it. False when the client is gone or expired at `now`.
   */
  renewClient (clientId: string, expiresAt: number, now: number): Promise<boolean>
  /** Live clients registered from this address (per-IP cap on dynamic registration). */
  countClientsFrom (address: string, now: number): Promise<number>
}

export interface FlowStore {
  saveFlow (key: string, flow: FlowRecord): Promise<void>
  /** Take-once: the first caller gets the flow and it is gone for everybody else. */
  takeFlow (key: string, now: number): Promise<FlowRecord | null>

  saveCode (hash: string, code: CodeRecord): Promise<void>
  /**
   * Take-once with memory: the first call gets `ok`; later calls get `reused` until `retainUntil`
   * (or the code's own expiry, whichever is later), then `unknown`. A `reused` answer also revokes
   * the code's `grantId` in advance, in the same atomic step: until that same time, saveGrant and
   * saveGrantWithTokens refuse the id (GrantRevokedError), so a first exchange still writing its
   * grant cannot issue tokens that outlive the replay.
   */
  consumeCode (hash: string, now: number, retainUntil: number): Promise<ConsumeCodeResult>

  /**
   * The one use of a signed assertion's id (a client assertion's or an ID-JAG's `jti`, RFC 7523
   * §3): true when `key` was not used before, and it is then remembered until `expiresAt` (the
   * assertion's own expiry, after which it is refused anyway); false for a replay. Atomic across
   * every process that shares the store: of N concurrent callers, one gets true.
   */
  consumeAssertionId (key: string, expiresAt: number, now: number): Promise<boolean>
}

export interface StoreStats {
  accessTokens: number
  refreshTokens: number
  grants: number
  clients: number
  flows: number
  codes: number
}

/**
 * A short lease, for work that must happen once across replicas (spending an upstream refresh
 * token). Optional: a store without it gives single-flight within one process only.
 */
export interface LockStore {
  /** Take `key` for `ttlMs` unless someone holds it; returns an owner token, or null. */
  acquireLock (key: string, ttlMs: number): Promise<string | null>
  /** Release only if still held by `owner` (a lease that expired may belong to someone else). */
  releaseLock (key: string, owner: string): Promise<void>
}

/** The whole contract, as the plugin uses it. */
export interface Store extends TokenStore, ClientStore, FlowStore, Partial<LockStore> {
  /** Counts for gauges; may be approximate. */
  stats? (): Promise<StoreStats>
  /** Release timers and connections the store opened itself. Called from the plugin's onClose. */
  close? (): Promise<void>
  /**
   * Optional: an ioredis client that the plugin's rate limiter (@fastify/rate-limit) may share, so
   * that limits hold across replicas. A store without it leaves the limits per process.
   */
  readonly rateLimitRedis?: unknown
}

/** Names of `Store`'s methods that are required or optional. */
type StoreMethod<Kind extends 'required' | 'optional'> = {
  [K in keyof Store]-?: NonNullable<Store[K]> extends (...args: never[]) => unknown
    ? (({} extends Pick<Store, K> ? 'optional' : 'required') extends Kind ? K : never)
    : never
}[keyof Store]

/**
 * The methods every store has, in one list: the plugin checks them at registration and telemetry
 * measures each as one operation (the name is the metric's label value and the span's suffix).
 * Written as an object so that tsc fails when it and the `Store` interface differ in either
 * direction (a missing key or an extra one).
 */
const required = {
  saveGrant: true,
  saveGrantWithTokens: true,
  getGrant: true,
  updateGrantUpstream: true,
  saveAccessToken: true,
  getAccessToken: true,
  deleteAccessToken: true,
  saveRefreshToken: true,
  getRefreshToken: true,
  rotateRefreshToken: true,
  rotateRefreshTokenWithAccess: true,
  replayRefreshToken: true,
  revokeGrant: true,
  listGrants: true,
  saveClient: true,
  getClient: true,
  deleteClient: true,
  renewClient: true,
  countClientsFrom: true,
  saveFlow: true,
  takeFlow: true,
  saveCode: true,
  consumeCode: true,
  consumeAssertionId: true
} as const satisfies Record<StoreMethod<'required'>, true>

/** The methods a store may leave out (the plugin then does without them), checked the same way. */
const optional = {
  getAccessTokenNow: true,
  acquireLock: true,
  releaseLock: true,
  stats: true,
  close: true
} as const satisfies Record<StoreMethod<'optional'>, true>

export const STORE_METHODS = Object.keys(required) as ReadonlyArray<keyof typeof required>
export const OPTIONAL_STORE_METHODS = Object.keys(optional) as ReadonlyArray<keyof typeof optional>
