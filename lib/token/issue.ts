import { generateId, generateToken, hashToken } from '../oauth/tokens.js'
import type { ResolvedConfig } from '../options/index.js'
import type { AccessTokenRecord, GrantRecord, RefreshTokenRecord, TokenStore } from '../storage/contract.js'
import { GrantRevokedError } from '../storage/contract.js'

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

/**
 * Creating grants and minting the tokens of their family. Plaintext tokens exist only in the
 * value returned to the caller; the store receives hashes.
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

  /** A fresh access token and refresh token for a grant (first issue after a code exchange). */
  async issueTokens (grant: GrantRecord, scopes: string[] = grant.scopes): Promise<TokenResponse> {
    const pair = this.#pair(grant, scopes, this.#now())
    await this.#store.saveAccessToken(pair.access.hash, pair.access.token)
    await this.#store.saveRefreshToken(pair.refresh.hash, pair.refresh.token)
    return pair.response
  }

  /**
   * A grant and its first token pair (what a code exchange creates), in one store call when the
   * store offers one (`saveGrantWithTokens`), else as createGrant + issueTokens would.
   */
  async createGrantWithTokens (input: NewGrant): Promise<{ grant: GrantRecord, tokens: TokenResponse }> {
    const now = this.#now()
    const grant = this.#grant(input, now)
    const { access, refresh, response } = this.#pair(grant, grant.scopes, now)
    const store = this.#store
    if (store.saveGrantWithTokens !== undefined) {
      await store.saveGrantWithTokens(grant, access, refresh)
    } else {
      await store.saveGrant(grant)
      try {
        await store.saveAccessToken(access.hash, access.token)
        await store.saveRefreshToken(refresh.hash, refresh.token)
      } catch (err) {
        // Between the saves the grant was revoked (a replayed code): say so, not "server error".
        if (await store.getGrant(grant.grantId, now) === null) throw new GrantRevokedError('the grant was revoked while its tokens were being saved')
        throw err
      }
    }
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

  /** New tokens for a grant: what the store keeps (hashes and records) and what the client gets. */
  #pair (grant: GrantRecord, scopes: string[], now: number): {
    access: { hash: string, token: AccessTokenRecord }
    refresh: { hash: string, token: RefreshTokenRecord }
    response: TokenResponse
  } {
    const accessToken = generateToken('accessToken')
    const refreshToken = generateToken('refreshToken')
    // Never past the grant: a token of an ended grant is dead in every store, and caches can trust expiresAt.
    const accessExpiresAt = Math.min(now + this.#config.ttl.accessToken * 1000, grant.expiresAt)
    const access: AccessTokenRecord = {
      grantId: grant.grantId,
      clientId: grant.clientId,
      userId: grant.userId,
      scopes,
      resource: grant.resource,
      issuedAt: now,
      expiresAt: accessExpiresAt
    }
    if (grant.email !== undefined) access.email = grant.email
    return {
      access: { hash: hashToken(accessToken), token: access },
      refresh: {
        hash: hashToken(refreshToken),
        token: {
          grantId: grant.grantId,
          clientId: grant.clientId,
          scopes,
          issuedAt: now,
          expiresAt: Math.min(now + this.#config.ttl.refreshToken * 1000, grant.expiresAt)
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
}

/** `expires_in` for a deadline: whole seconds left, never negative. */
export function secondsUntil (expiresAt: number, now: number): number {
  return Math.max(0, Math.floor((expiresAt - now) / 1000))
}
