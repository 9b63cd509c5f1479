import { OAuthError } from '../../errors.js'
import type { ResolvedConfig } from '../../options/index.js'
import type { Auditor } from '../../security/audit.js'
import type { ClientRecord } from '../../storage/contract.js'
import type { GrantService, TokenResponse } from '../issue.js'
import { requestedResource } from '../../oauth/resource.js'
import { decideClientScopes, withinClient } from '../../oauth/scopes.js'

export interface ClientCredentialsDeps {
  config: ResolvedConfig
  grants: Pick<GrantService, 'createAccessGrant'>
  auditor: Auditor
}

/** The parameters of grant_type=client_credentials (RFC 6749 §4.4.2, RFC 8707). */
export interface ClientCredentialsRequest {
  scope?: string
  resource?: string
}

/**
 * grant_type=client_credentials (the MCP extension io.modelcontextprotocol/oauth-client-credentials):
 * the authenticated client is the token's subject. Only a confidential client may use it (its
 * credentials are the whole proof); the token is bound to one resource, holds no more than the
 * client's registered scope, and comes without a refresh token: the client simply asks again.
 */
export class ClientCredentialsGrant {
  readonly #d: ClientCredentialsDeps

  constructor (deps: ClientCredentialsDeps) {
    this.#d = deps
  }

  /** Throws OAuthError. */
  async issue (client: ClientRecord, { scope, resource }: ClientCredentialsRequest): Promise<TokenResponse> {
    const { config } = this.#d
    if (client.tokenEndpointAuthMethod === 'none') {
      throw new OAuthError('unauthorized_client', 'client_credentials needs a confidential client: a public client has no credentials to prove who it is')
    }
    const target = requestedResource(resource, config.resources)
    if (!target.ok) throw new OAuthError('invalid_target', target.description)
    const supported = target.resource.scopes
    // Asked for nothing: a client with a registered scope gets all of it (it was registered for this
    // very use); one without gets the defaults, as at the authorization endpoint.
    const defaults = client.scope !== undefined ? withinClient(supported, client) : config.defaultScopes.filter(s => supported.includes(s))
    const scopes = decideClientScopes(scope, supported, defaults, client)
    if (!scopes.ok) throw new OAuthError('invalid_scope', scopes.description)
    const { grant, tokens } = await this.#d.grants.createAccessGrant({
      userId: client.clientId,
      clientId: client.clientId,
      scopes: scopes.scopes,
      resource: target.resource.resource,
      subjectType: 'client'
    })
    this.#d.auditor.emit('token_issued', {
      clientId: client.clientId, userId: grant.userId, grantId: grant.grantId, grantType: 'client_credentials', subjectType: 'client'
    })
    return tokens
  }
}
