import { OAuthError } from '../errors.js'
import type { ResolvedConfig } from '../options/index.js'
import type { Auditor } from '../security/audit.js'
import type { ClientAuthMethod, ClientRecord, Store } from '../storage/contract.js'
import { generateId, generateToken, hashToken, looksLike, matchesHash, safeEqual } from '../oauth/tokens.js'
import { validateClientMetadata, type MetadataRules } from './metadata.js'

export interface RegistrationDeps {
  config: ResolvedConfig
  store: Store
  auditor: Auditor
  now: () => number
  /** Every grant of a client, with its upstream tokens (the same path as `revokeClient()`). */
  revokeClient: (clientId: string) => Promise<number>
}

/** RFC 7591 §3.2.1 client information response (plus RFC 7592 management fields). */
export interface ClientInformation {
  client_id: string
  client_id_issued_at: number
  client_secret?: string
  client_secret_expires_at?: number
  registration_access_token?: string
  registration_client_uri: string
  redirect_uris: string[]
  token_endpoint_auth_method: ClientAuthMethod
  grant_types: string[]
  response_types: string[]
  application_type: 'web' | 'native'
  client_name?: string
  scope?: string
  [key: string]: unknown
}

/**
 * How much further than needed a use moves a client's expiry, so that a busy client is written at
 * most once an hour: an hour, or a tenth of a shorter period.
 */
function renewSlack (periodMs: number): number {
  return Math.min(3_600_000, periodMs / 10)
}

/** Methods that authenticate with the client secret this server issues (private_key_jwt uses the client's keys). */
function usesSecret (method: ClientAuthMethod): boolean {
  return method === 'client_secret_basic' || method === 'client_secret_post'
}

function bad (description: string): OAuthError {
  return new OAuthError('invalid_client_metadata', description)
}

/**
 * RFC 7591 dynamic registration and RFC 7592 management. Secrets and registration access tokens are
 * shown once and stored as SHA-256 hashes; reads and updates rotate the registration access token
 * (RFC 7592 §3 allows it), since the old one cannot be shown again.
 */
export class RegistrationService {
  readonly #d: RegistrationDeps
  readonly #rules: MetadataRules

  constructor (deps: RegistrationDeps) {
    this.#d = deps
    const { redirects, scopes, registration, enterprise } = deps.config
    this.#rules = { redirects, scopes, allowPublicClients: registration.allowPublicClients, allowJwtBearer: enterprise.issuers.length > 0 }
  }

  /**
   * Is this caller allowed to register, given the mode, its bearer token and the redirect URIs?
   * Returns whether it presented the initial access token (what its later updates may do depends on it).
   */
  authorize (authorization: string | undefined, body: unknown): boolean {
    const { registration } = this.#d.config
    if (registration.mode === 'public') return false
    const m = authorization === undefined ? null : /^bearer +(\S+) *$/i.exec(authorization)
    if (m !== null && registration.token !== undefined && safeEqual(m[1] as string, registration.token)) return true
    if (m === null && body !== null && typeof body === 'object' && this.#trusted((body as { redirect_uris?: unknown }).redirect_uris)) return false
    throw new OAuthError('invalid_token', m === null ? 'Registration requires an initial access token' : 'The initial access token is invalid', {
      headers: { 'www-authenticate': 'Bearer error="invalid_token"' }
    })
  }

  /** The metadata rules for a client registered with the initial access token or without. */
  #rulesFor (withToken: boolean): MetadataRules {
    return withToken ? { ...this.#rules, allowClientCredentials: true } : this.#rules
  }

  /** In mode "token": may a client without the initial access token hold these redirect URIs? */
  #trusted (uris: unknown): boolean {
    const schemes = this.#d.config.registration.trustedSchemes
    return schemes.length > 0 && Array.isArray(uris) && uris.length > 0 &&
      uris.every(u => typeof u === 'string' && schemes.some(s => u.toLowerCase().startsWith(`${s}:`)))
  }

  async register (body: unknown, registeredFrom: string, withToken = false): Promise<ClientInformation> {
    const meta = validateClientMetadata(body, this.#rulesFor(withToken))
    const now = this.#d.now()
    const { maxClientsPerIp, unusedClientTtlSeconds } = this.#d.config.registration
    if (maxClientsPerIp > 0 && await this.#d.store.countClientsFrom(registeredFrom, now) >= maxClientsPerIp) {
      throw new OAuthError('slow_down', 'Too many clients registered from this address; try again later', { statusCode: 429 })
    }
    const registrationToken = generateToken('registrationToken')
    const secret = usesSecret(meta.tokenEndpointAuthMethod) ? generateToken('clientSecret') : undefined
    const record: ClientRecord = {
      clientId: `mcp_${generateId()}`,
      ...meta,
      clientIdIssuedAt: Math.floor(now / 1000),
      source: 'dcr',
      registeredFrom,
      registrationTokenHash: hashToken(registrationToken)
    }
    if (withToken) record.registeredWithToken = true
    // As a use sets it (keepAlive): the client's first requests, right after, write nothing.
    if (unusedClientTtlSeconds > 0) record.expiresAt = now + unusedClientTtlSeconds * 1000 + renewSlack(unusedClientTtlSeconds * 1000)
    if (secret !== undefined) {
      record.clientSecretHash = hashToken(secret)
      record.clientSecretExpiresAt = 0
    }
    await this.#d.store.saveClient(record)
    this.#d.auditor.emit('client_registered', { clientId: record.clientId, source: 'dcr' })
    return this.#information(record, registrationToken, secret)
  }

  async read (clientId: string, authorization: string | undefined): Promise<ClientInformation> {
    const client = await this.#managed(clientId, authorization)
    const registrationToken = generateToken('registrationToken')
    const updated = { ...client, registrationTokenHash: hashToken(registrationToken) }
    await this.#d.store.saveClient(updated)
    return this.#information(updated, registrationToken)
  }

  async update (clientId: string, authorization: string | undefined, body: unknown): Promise<ClientInformation> {
    const client = await this.#managed(clientId, authorization)
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad('The body must be a JSON object of client metadata')
    const b = body as Record<string, unknown>
    if (b.client_id !== clientId) throw new OAuthError('invalid_request', 'client_id in the body must equal the client being updated')
    for (const f of ['registration_access_token', 'registration_client_uri', 'client_secret_expires_at', 'client_id_issued_at']) {
      if (b[f] !== undefined) throw new OAuthError('invalid_request', `${f} must not be sent in an update`)
    }
    if (b.client_secret !== undefined) {
      if (typeof b.client_secret !== 'string' || client.clientSecretHash === undefined || !matchesHash(b.client_secret, client.clientSecretHash)) {
        throw new OAuthError('invalid_request', 'client_secret does not match')
      }
    }
    const meta = validateClientMetadata(body, this.#rulesFor(client.registeredWithToken === true))
    // An update passes the policy a registration passes: without the initial access token, only what
    // a registration without it could hold (clients registered in mode "public" count as without).
    if (this.#d.config.registration.mode === 'token' && client.registeredWithToken !== true && !this.#trusted(meta.redirectUris)) {
      const schemes = this.#d.config.registration.trustedSchemes
      throw new OAuthError('invalid_redirect_uri', 'This client registered without the initial access token: every redirect URI must use a trusted scheme' +
        (schemes.length > 0 ? ` (${schemes.join(', ')})` : ' (none is configured)'))
    }
    const changingAuth = meta.tokenEndpointAuthMethod !== client.tokenEndpointAuthMethod
    let secret: string | undefined
    const registrationToken = generateToken('registrationToken')
    const updated: ClientRecord = {
      clientId,
      ...meta,
      clientIdIssuedAt: client.clientIdIssuedAt,
      source: client.source,
      registrationTokenHash: hashToken(registrationToken)
    }
    if (client.registeredFrom !== undefined) updated.registeredFrom = client.registeredFrom
    if (client.registeredWithToken === true) updated.registeredWithToken = true
    if (client.expiresAt !== undefined) updated.expiresAt = client.expiresAt
    if (usesSecret(meta.tokenEndpointAuthMethod)) {
      if (changingAuth || client.clientSecretHash === undefined) {
        secret = generateToken('clientSecret')
        updated.clientSecretHash = hashToken(secret)
      } else {
        updated.clientSecretHash = client.clientSecretHash
      }
      updated.clientSecretExpiresAt = 0
    }
    await this.#d.store.saveClient(updated)
    return this.#information(updated, registrationToken, secret)
  }

  async delete (clientId: string, authorization: string | undefined): Promise<void> {
    await this.#managed(clientId, authorization)
    // Grants first: should this fail, the client is still there to try again.
    await this.#d.revokeClient(clientId)
    await this.#d.store.deleteClient(clientId)
    this.#d.auditor.emit('client_deleted', { clientId })
  }

  /**
   * A use of a client: tokens issued to it after it authenticated (an authorization request names a
   * client without proving anything, so it is not one). A dynamic client then lives `unusedClientTtlSeconds` longer, or as long as a token
   * issued now may be used (the refresh token's lifetime) if that is longer: it never expires while
   * a token of its is alive. The expiry is set a little further than needed (renewSlack), so that a
   * busy client is written at most about once an hour; other uses cost nothing: no store call and
   * no promise (undefined), which is every use on the token endpoint's hot path.
   */
  keepAlive (client: ClientRecord): Promise<unknown> | undefined {
    const { registration, ttl } = this.#d.config
    const unused = registration.unusedClientTtlSeconds * 1000
    if (client.source !== 'dcr' || unused === 0) return undefined
    const now = this.#d.now()
    const keep = Math.max(unused, ttl.refreshToken * 1000, ttl.accessToken * 1000)
    if (client.expiresAt !== undefined && client.expiresAt >= now + keep) return undefined
    const expiresAt = now + keep + renewSlack(keep)
    return this.#d.store.renewClient(client.clientId, expiresAt, now)
  }

  /** RFC 7592 §2: a wrong token and an unknown client look the same (401 invalid_token). */
  async #managed (clientId: string, authorization: string | undefined): Promise<ClientRecord> {
    const m = authorization === undefined ? null : /^bearer +(\S+) *$/i.exec(authorization)
    const deny = new OAuthError('invalid_token', 'The registration access token is invalid for this client', {
      headers: { 'www-authenticate': 'Bearer error="invalid_token"' }
    })
    if (m === null || !looksLike('registrationToken', m[1] as string)) throw deny
    const client = clientId.length > 255 ? null : await this.#d.store.getClient(clientId, this.#d.now())
    if (client === null || client.source !== 'dcr' || client.registrationTokenHash === undefined ||
      !matchesHash(m[1] as string, client.registrationTokenHash)) throw deny
    return client
  }

  #information (client: ClientRecord, registrationToken: string, secret?: string): ClientInformation {
    const info: ClientInformation = {
      client_id: client.clientId,
      client_id_issued_at: client.clientIdIssuedAt,
      registration_access_token: registrationToken,
      registration_client_uri: `${this.#d.config.issuer}/oauth/register/${encodeURIComponent(client.clientId)}`,
      redirect_uris: client.redirectUris,
      token_endpoint_auth_method: client.tokenEndpointAuthMethod,
      grant_types: client.grantTypes,
      response_types: client.responseTypes,
      application_type: client.applicationType,
      ...client.metadata
    }
    if (secret !== undefined) {
      info.client_secret = secret
      info.client_secret_expires_at = client.clientSecretExpiresAt ?? 0
    }
    if (client.clientName !== undefined) info.client_name = client.clientName
    if (client.jwks !== undefined) info.jwks = client.jwks
    if (client.jwksUri !== undefined) info.jwks_uri = client.jwksUri
    if (client.scope !== undefined) info.scope = client.scope
    return info
  }
}
