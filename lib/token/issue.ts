import { generateId, generateToken, hashToken } from '../oauth/tokens.js'
import type { ResolvedConfig } from '../options/index.js'
import type { AccessTokenRecord, GrantRecord, MachineSubject, RefreshTokenRecord, TokenStore } from '../storage/contract.js'

export interface TokenResponse {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  /** Absent from grants that issue none (client credentials): their client asks again instead. */
  refresh_token?: string
  scope: string
}

/** The response of a grant that issues a refresh token with its access token. */
export type TokenPair = TokenResponse & { refresh_token: string }

export interface NewGrant {
  /** Pre-assigned id (the code exchange uses the one its code recorded); random when absent. */
  grantId?: string
  userId: string
  email?: string
  clientId: string
  scopes: string[]
  resource: string
  upstream?: string
  provider?: string
}

/** A new access token of a grant: what the store keeps (hash and record) and what the client gets. */
export interface IssuedAccess {
  access: { hash: string, token: AccessTokenRecord }
  response: TokenResponse
}

/** New tokens of a grant, the refresh token too. */
export interface IssuedTokens extends IssuedAccess {
  refresh: { hash: string, token: RefreshTokenRecord }
  response: TokenPair
}

export interface AccessInput {
  grant: GrantRecord
  /** The access token's scopes (a refresh may narrow them). */
  scopes: string[]
  /** The e-mail the access token carries (a refresh's re-check may say another than the grant's). */
  email: string | undefined
  now: number
}

export interface IssueInput extends AccessInput {
  /** The refresh token's scopes when they differ: a narrowed refresh keeps the wider ones for the next. */
  refreshScopes?: string[]
  /** The plaintext tokens when they are derived (a rotation's successor pair); drawn at random when absent. */
  values?: { accessToken: string, refreshToken: string }
}

/**
 * The one place that builds an access token's record and the token response, for every grant type
 * (buildTokens adds the refresh token). The plaintext token exists only in the response; the record
 * is stored under its hash. The token ends no later than the grant: a token of an ended grant is
 * dead in every store, and caches can trust expiresAt.
 */
export function buildAccessToken (ttl: Pick<ResolvedConfig['ttl'], 'accessToken'>, input: AccessInput, value = generateToken('accessToken')): IssuedAccess {
  const { grant, scopes, now } = input
  const expiresAt = Math.min(now + ttl.accessToken * 1000, grant.expiresAt)
  const access: AccessTokenRecord = {
    grantId: grant.grantId,
    clientId: grant.clientId,
    userId: grant.userId,
    scopes,
    resource: grant.resource,
    issuedAt: now,
    expiresAt
  }
  if (grant.subjectType !== undefined) access.subjectType = grant.subjectType
  if (input.email !== undefined) access.email = input.email
  return {
    access: { hash: hashToken(value), token: access },
    response: {
      access_token: value,
      token_type: 'Bearer',
      expires_in: secondsUntil(expiresAt, now),
      scope: scopes.length === 1 ? scopes[0] as string : scopes.join(' ')
    }
  }
}

/** An access token and a refresh token of a grant; the refresh token, too, ends no later than the grant. */
export function buildTokens (ttl: Pick<ResolvedConfig['ttl'], 'accessToken' | 'refreshToken'>, input: IssueInput): IssuedTokens {
  const { grant, scopes, now } = input
  const refreshToken = input.values?.refreshToken ?? generateToken('refreshToken')
  const { access, response } = buildAccessToken(ttl, input, input.values?.accessToken)
  return {
    access,
    refresh: {
      hash: hashToken(refreshToken),
      token: {
        grantId: grant.grantId,
        clientId: grant.clientId,
        scopes: input.refreshScopes ?? scopes,
        issuedAt: now,
        expiresAt: Math.min(now + ttl.refreshToken * 1000, grant.expiresAt)
      }
    },
    response: { ...response, refresh_token: refreshToken }
  }
}

/**
 * Creating grants and minting the tokens of their family (the code exchange, and service
 * integrations through `fastify.mcpOAuth.grants`).
 */
export class GrantService {
  readonly #store: TokenStore
  readonly #config: ResolvedConfig
  readonly #now: () => number

  constructor (store: TokenStore, config: ResolvedConfig, now: () => number) {
    this.#store = store
    this.#config = config
    this.#now = now
  }

  async createGrant (input: NewGrant): Promise<GrantRecord> {
    const grant = this.#grant(input, this.#now())
    await this.#store.saveGrant(grant)
    return grant
  }

  /** A fresh access token and refresh token for an existing grant. */
  async issueTokens (grant: GrantRecord, scopes: string[] = grant.scopes): Promise<TokenPair> {
    const { access, refresh, response } = buildTokens(this.#config.ttl, { grant, scopes, email: grant.email, now: this.#now() })
    await this.#store.saveAccessToken(access.hash, access.token)
    await this.#store.saveRefreshToken(refresh.hash, refresh.token)
    return response
  }

  /**
   * A grant and its first token pair (what a code exchange creates), in one store call. Throws
   * GrantRevokedError when the grant id was revoked in advance (its code was replayed).
   */
  async createGrantWithTokens (input: NewGrant): Promise<{ grant: GrantRecord, tokens: TokenPair }> {
    const now = this.#now()
    const grant = this.#grant(input, now)
    const { access, refresh, response } = buildTokens(this.#config.ttl, { grant, scopes: grant.scopes, email: grant.email, now })
    await this.#store.saveGrantWithTokens(grant, access, refresh)
    return { grant, tokens: response }
  }

  /**
   * A grant that issues no refresh token (client credentials, jwt-bearer) and its one access token,
   * in one store call. The grant ends with the token, so nothing of it outlives what was issued.
   */
  async createAccessGrant (input: NewGrant & { subjectType?: MachineSubject }): Promise<{ grant: GrantRecord, tokens: TokenResponse }> {
    const now = this.#now()
    const grant = this.#grant(input, now, now + this.#config.ttl.accessToken * 1000)
    if (input.subjectType !== undefined) grant.subjectType = input.subjectType
    const { access, response } = buildAccessToken(this.#config.ttl, { grant, scopes: grant.scopes, email: grant.email, now })
    await this.#store.saveGrantWithTokens(grant, access)
    return { grant, tokens: response }
  }

  #grant (input: NewGrant, now: number, expiresAt = now + this.#config.ttl.grant * 1000): GrantRecord {
    const grant: GrantRecord = {
      grantId: input.grantId ?? generateId(),
      userId: input.userId,
      clientId: input.clientId,
      scopes: input.scopes,
      resource: input.resource,
      createdAt: now,
      expiresAt
    }
    if (input.email !== undefined) grant.email = input.email
    if (input.upstream !== undefined) grant.upstream = input.upstream
    if (input.provider !== undefined) grant.provider = input.provider
    return grant
  }
}

/** `expires_in` for a deadline: whole seconds left, never negative. */
export function secondsUntil (expiresAt: number, now: number): number {
  return Math.max(0, Math.floor((expiresAt - now) / 1000))
}
