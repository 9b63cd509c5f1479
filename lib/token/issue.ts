import { generateId, generateToken, hashToken } from '../oauth/tokens.js'
import type { ResolvedConfig } from '../options/index.js'
import type { AccessTokenRecord, GrantRecord, RefreshTokenRecord, TokenStore } from '../storage/contract.js'

export interface TokenResponse {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  refresh_token: string
  scope: string
}

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

/** New tokens of a grant: what the store keeps (hashes and records) and what the client gets. */
export interface IssuedTokens {
  access: { hash: string, token: AccessTokenRecord }
  refresh: { hash: string, token: RefreshTokenRecord }
  response: TokenResponse
}

export interface IssueInput {
  grant: GrantRecord
  /** The access token's scopes (a refresh may narrow them). */
  scopes: string[]
  /** The refresh token's scopes when they differ: a narrowed refresh keeps the wider ones for the next. */
  refreshScopes?: string[]
  /** The e-mail the access token carries (a refresh's re-check may say another than the grant's). */
  email: string | undefined
  /** The plaintext tokens when they are derived (a rotation's successor pair); drawn at random when absent. */
  values?: { accessToken: string, refreshToken: string }
  now: number
}

/**
 * The one place that builds token records and the token response, for every grant type. Plaintext
 * tokens exist only in the response; the records are stored under their hashes. Both tokens end no
 * later than the grant: a token of an ended grant is dead in every store, and caches can trust expiresAt.
 */
export function buildTokens (ttl: Pick<ResolvedConfig['ttl'], 'accessToken' | 'refreshToken'>, input: IssueInput): IssuedTokens {
  const { grant, scopes, now } = input
  const accessToken = input.values?.accessToken ?? generateToken('accessToken')
  const refreshToken = input.values?.refreshToken ?? generateToken('refreshToken')
  const accessExpiresAt = Math.min(now + ttl.accessToken * 1000, grant.expiresAt)
  const access: AccessTokenRecord = {
    grantId: grant.grantId,
    clientId: grant.clientId,
    userId: grant.userId,
    scopes,
    resource: grant.resource,
    issuedAt: now,
    expiresAt: accessExpiresAt
  }
  if (input.email !== undefined) access.email = input.email
  return {
    access: { hash: hashToken(accessToken), token: access },
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
    response: {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: secondsUntil(accessExpiresAt, now),
      refresh_token: refreshToken,
      scope: scopes.join(' ')
    }
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
  async issueTokens (grant: GrantRecord, scopes: string[] = grant.scopes): Promise<TokenResponse> {
    const { access, refresh, response } = buildTokens(this.#config.ttl, { grant, scopes, email: grant.email, now: this.#now() })
    await this.#store.saveAccessToken(access.hash, access.token)
    await this.#store.saveRefreshToken(refresh.hash, refresh.token)
    return response
  }

  /**
   * A grant and its first token pair (what a code exchange creates), in one store call. Throws
   * GrantRevokedError when the grant id was revoked in advance (its code was replayed).
   */
  async createGrantWithTokens (input: NewGrant): Promise<{ grant: GrantRecord, tokens: TokenResponse }> {
    const now = this.#now()
    const grant = this.#grant(input, now)
    const { access, refresh, response } = buildTokens(this.#config.ttl, { grant, scopes: grant.scopes, email: grant.email, now })
    await this.#store.saveGrantWithTokens(grant, access, refresh)
    return { grant, tokens: response }
  }

  #grant (input: NewGrant, now: number): GrantRecord {
    const grant: GrantRecord = {
      grantId: input.grantId ?? generateId(),
      userId: input.userId,
      clientId: input.clientId,
      scopes: input.scopes,
      resource: input.resource,
      createdAt: now,
      expiresAt: now + this.#config.ttl.grant * 1000
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
