import { OAuthError } from '../errors.js'
import type { ClientRecord } from '../storage/contract.js'
import type { AuthorizationCodeGrant } from './grants/authorization-code.js'
import type { ClientCredentialsGrant } from './grants/client-credentials.js'
import type { RefreshTokenGrant } from './grants/refresh-token.js'
import type { JwtBearerGrant } from './grants/jwt-bearer.js'
import { JWT_BEARER_GRANT } from '../oauth/jwt.js'
import type { TokenResponse } from './issue.js'

/** The token request's parameters (RFC 6749 §3.2), as the route's schema admits them: each at most once. */
export interface TokenParameters {
  grant_type: string
  code?: string
  code_verifier?: string
  redirect_uri?: string
  refresh_token?: string
  scope?: string
  resource?: string
  assertion?: string
}

/** One grant type: its own parameters out of the request, then its decision. Throws OAuthError. */
type GrantHandler = (client: ClientRecord, params: TokenParameters) => Promise<TokenResponse>

export interface TokenEndpointDeps {
  authorizationCode: Pick<AuthorizationCodeGrant, 'exchangeCode'>
  refreshToken: Pick<RefreshTokenGrant, 'refresh'>
  clientCredentials: Pick<ClientCredentialsGrant, 'issue'>
  /** Present when an enterprise IdP is trusted (Enterprise-Managed Authorization). */
  jwtBearer?: Pick<JwtBearerGrant, 'exchange'> | undefined
  /**
   * Called once tokens are issued to the authenticated client: tokens are its use (finding 7),
   * which renews a dynamic client's expiry. Merely naming a client (an authorization request
   * anyone can send) does not.
   */
  keepAlive: (client: ClientRecord) => Promise<unknown> | undefined
}

/**
 * The token endpoint's decisions for an authenticated client: which grant type handles the request,
 * whether this client may use it, and the client's keep-alive once tokens are issued. A new grant
 * type is one more row of the table and one more file in grants/.
 */
export class TokenEndpoint {
  readonly #grants: ReadonlyMap<string, GrantHandler>
  readonly #unsupported: string
  readonly #keepAlive: TokenEndpointDeps['keepAlive']

  constructor ({ authorizationCode, refreshToken, clientCredentials, jwtBearer, keepAlive }: TokenEndpointDeps) {
    const grants = new Map<string, GrantHandler>([
      ['authorization_code', (client, p) => authorizationCode.exchangeCode(client, {
        code: p.code, codeVerifier: p.code_verifier, redirectUri: p.redirect_uri, resource: p.resource
      })],
      ['refresh_token', (client, p) => refreshToken.refresh(client, {
        refreshToken: p.refresh_token, scope: p.scope, resource: p.resource
      })],
      ['client_credentials', (client, p) => clientCredentials.issue(client, { scope: p.scope, resource: p.resource })]
    ])
    if (jwtBearer !== undefined) {
      grants.set(JWT_BEARER_GRANT, (client, p) => jwtBearer.exchange(client, {
        assertion: p.assertion, scope: p.scope, resource: p.resource
      }))
    }
    this.#grants = grants
    this.#unsupported = `grant_type must be one of ${[...this.#grants.keys()].join(', ')}`
    this.#keepAlive = keepAlive
  }

  async grant (client: ClientRecord, params: TokenParameters): Promise<TokenResponse> {
    const handler = this.#grants.get(params.grant_type)
    if (handler === undefined) throw new OAuthError('unsupported_grant_type', this.#unsupported)
    if (!client.grantTypes.includes(params.grant_type)) {
      throw new OAuthError('unauthorized_client', `This client is not registered for ${params.grant_type}`)
    }
    const tokens = await handler(client, params)
    const renewing = this.#keepAlive(client)
    if (renewing !== undefined) await renewing
    return tokens
  }
}
