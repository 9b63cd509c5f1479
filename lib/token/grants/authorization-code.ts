import { OAuthError } from '../../errors.js'
import type { ResolvedConfig } from '../../options/index.js'
import type { Auditor } from '../../security/audit.js'
import type { ClientRecord, FlowStore } from '../../storage/contract.js'
import { GrantRevokedError } from '../../errors.js'
import type { GrantService, NewGrant, TokenPair } from '../issue.js'
import { verifyPkce } from '../../oauth/pkce.js'
import { matchResource } from '../../oauth/resource.js'
import { assertClientHolds } from '../../oauth/scopes.js'
import { hashToken, looksLike } from '../../oauth/tokens.js'

export interface AuthorizationCodeDeps {
  config: ResolvedConfig
  store: Pick<FlowStore, 'consumeCode'>
  grants: Pick<GrantService, 'createGrantWithTokens'>
  auditor: Auditor
  now: () => number
  /** Family revocation, including the upstream grant. */
  revokeGrant: (grantId: string) => Promise<boolean>
}

/** The parameters of grant_type=authorization_code (RFC 6749 §4.1.3, RFC 7636 §4.5, RFC 8707). */
export interface CodeExchange {
  code?: string
  codeVerifier?: string
  redirectUri?: string
  resource?: string
}

/**
 * grant_type=authorization_code: the code is taken once (a replay revokes what it issued), bound
 * to its client, redirect URI, PKCE challenge and resource; the grant and its first pair are
 * written together.
 */
export class AuthorizationCodeGrant {
  readonly #d: AuthorizationCodeDeps

  constructor (deps: AuthorizationCodeDeps) {
    this.#d = deps
  }

  /** Throws OAuthError. */
  async exchangeCode (client: ClientRecord, { code, codeVerifier, redirectUri, resource }: CodeExchange): Promise<TokenPair> {
    const { config, store } = this.#d
    if (code === undefined || code === '') throw new OAuthError('invalid_request', 'code is required')
    if (!looksLike('authorizationCode', code)) throw new OAuthError('invalid_grant', 'The authorization code is invalid')
    const now = this.#d.now()
    // Remember a used code long enough to catch a replay of a stolen one after the exchange.
    const result = await store.consumeCode(hashToken(code), now, now + Math.max(config.ttl.code * 1000, 10 * 60_000))
    if (result.status === 'unknown') throw new OAuthError('invalid_grant', 'The authorization code is invalid, expired or already used')
    const record = result.code
    if (result.status === 'reused') {
      await this.#d.revokeGrant(record.grantId)
      this.#d.auditor.emit('code_reuse', { clientId: record.clientId, grantId: record.grantId })
      throw new OAuthError('invalid_grant', 'The authorization code is invalid, expired or already used')
    }
    if (record.clientId !== client.clientId) throw new OAuthError('invalid_grant', 'The authorization code was issued to another client')
    if (redirectUri !== undefined && redirectUri !== record.redirectUri) {
      throw new OAuthError('invalid_grant', 'redirect_uri does not match the authorization request')
    }
    if (codeVerifier === undefined || codeVerifier === '') {
      this.#d.auditor.emit('pkce_failure', { clientId: client.clientId })
      throw new OAuthError('invalid_request', 'code_verifier is required (PKCE)')
    }
    if (!verifyPkce(codeVerifier, record.codeChallenge, record.codeChallengeMethod)) {
      this.#d.auditor.emit('pkce_failure', { clientId: client.clientId })
      throw new OAuthError('invalid_grant', 'The code_verifier does not match the code_challenge')
    }
    if (resource !== undefined && matchResource(resource, config.resources)?.resource !== record.resource) {
      throw new OAuthError('invalid_target', 'The resource does not match the authorization request')
    }
    assertClientHolds(record.scopes, client)
    const input: NewGrant = {
      grantId: record.grantId,
      userId: record.userId,
      clientId: record.clientId,
      scopes: record.scopes,
      resource: record.resource
    }
    if (record.email !== undefined) input.email = record.email
    if (record.upstream !== undefined) input.upstream = record.upstream
    if (record.provider !== undefined) input.provider = record.provider
    let issued: Awaited<ReturnType<GrantService['createGrantWithTokens']>>
    try {
      issued = await this.#d.grants.createGrantWithTokens(input)
    } catch (err) {
      // The code was replayed while this exchange was under way: the replay revoked the grant first.
      if (err instanceof GrantRevokedError) throw new OAuthError('invalid_grant', 'The authorization code was used more than once; the grant has been revoked')
      throw err
    }
    const { grant, tokens } = issued
    this.#d.auditor.emit('token_issued', { clientId: client.clientId, userId: grant.userId, grantId: grant.grantId, grantType: 'authorization_code' })
    return tokens
  }
}
