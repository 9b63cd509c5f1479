import { OAuthError } from '../errors.js'
import type { ResolvedConfig } from '../options/index.js'
import type { Auditor } from '../security/audit.js'
import type { ClientAuthMethod, ClientRecord, Store } from '../storage/contract.js'
import { checkRedirectUri, type RedirectKind } from '../oauth/redirect.js'
import { registeredScope } from '../oauth/scopes.js'
import { hasUnsafeDisplayChars } from '../oauth/display.js'
import { generateId, generateToken, hashToken, looksLike, safeEqual } from '../oauth/tokens.js'

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

/** Optional metadata echoed as registered: URLs are checked, strings bounded. */
const URL_FIELDS = ['client_uri', 'logo_uri', 'tos_uri', 'policy_uri'] as const
const STRING_FIELDS = ['software_id', 'software_version'] as const
const MAX_STRING = 2000
const MAX_REDIRECTS = 20
/**
 * How much further than needed a use moves a client's expiry, so that a busy client is written at
 * most once an hour: an hour, or a tenth of a shorter period.
 */
function renewSlack (periodMs: number): number {
  return Math.min(3_600_000, periodMs / 10)
}

function bad (description: string): OAuthError {
  return new OAuthError('invalid_client_metadata', description)
}

/** The client record's metadata fields, as validated from a registration body. */
export type ValidatedMetadata = Pick<ClientRecord,
  'redirectUris' | 'tokenEndpointAuthMethod' | 'grantTypes' | 'responseTypes' | 'applicationType' | 'clientName' | 'scope' | 'metadata'>

/** Validate RFC 7591 client metadata. Throws invalid_client_metadata / invalid_redirect_uri (400). */
/** The fields of a client record that come from its validated metadata (registration and update alike). */
function metadataFields (meta: ValidatedMetadata): Pick<ClientRecord, 'redirectUris' | 'tokenEndpointAuthMethod' | 'grantTypes' | 'responseTypes' | 'applicationType' | 'metadata' | 'clientName' | 'scope'> {
  return {
    redirectUris: meta.redirectUris,
    tokenEndpointAuthMethod: meta.tokenEndpointAuthMethod,
    grantTypes: meta.grantTypes,
    responseTypes: meta.responseTypes,
    applicationType: meta.applicationType,
    metadata: meta.metadata,
    ...(meta.clientName !== undefined ? { clientName: meta.clientName } : {}),
    ...(meta.scope !== undefined ? { scope: meta.scope } : {})
  }
}

export function validateClientMetadata (input: unknown, config: ResolvedConfig): ValidatedMetadata {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw bad('The body must be a JSON object of client metadata')
  const body = input as Record<string, unknown>

  const uris = body.redirect_uris
  if (!Array.isArray(uris) || uris.length === 0) throw new OAuthError('invalid_redirect_uri', 'redirect_uris must be a non-empty array')
  if (uris.length > MAX_REDIRECTS) throw new OAuthError('invalid_redirect_uri', `At most ${MAX_REDIRECTS} redirect_uris`)
  const redirectKinds: RedirectKind[] = []
  uris.forEach((u, i) => {
    if (typeof u !== 'string') throw new OAuthError('invalid_redirect_uri', `redirect_uris[${i}] must be a string`)
    const check = checkRedirectUri(u, config.redirects)
    if (!check.ok) throw new OAuthError('invalid_redirect_uri', `redirect_uris[${i}] ${check.reason}`)
    redirectKinds.push(check.kind)
  })
  const redirectUris = [...new Set(uris as string[])]

  const method = body.token_endpoint_auth_method ?? 'client_secret_basic'
  if (method !== 'none' && method !== 'client_secret_basic' && method !== 'client_secret_post') {
    throw bad('token_endpoint_auth_method must be none, client_secret_basic or client_secret_post')
  }
  if (method === 'none' && !config.registration.allowPublicClients) throw bad('Public clients (token_endpoint_auth_method "none") are not accepted here')

  const grantTypes = stringArray(body.grant_types, 'grant_types') ?? ['authorization_code']
  const unknownGrant = grantTypes.find(g => g !== 'authorization_code' && g !== 'refresh_token')
  if (unknownGrant !== undefined) throw bad(`Unsupported grant type: ${unknownGrant.slice(0, 50)}`)
  if (!grantTypes.includes('authorization_code')) throw bad('grant_types must include authorization_code')
  // Every code exchange returns a refresh token, so the client is registered for using it.
  if (!grantTypes.includes('refresh_token')) grantTypes.push('refresh_token')
  const responseTypes = stringArray(body.response_types, 'response_types') ?? ['code']
  if (responseTypes.length !== 1 || responseTypes[0] !== 'code') throw bad('response_types must be ["code"]')

  const native = redirectKinds.some(k => k === 'loopback' || k === 'custom')
  const appType = body.application_type ?? (native ? 'native' : 'web')
  if (appType !== 'web' && appType !== 'native') throw bad('application_type must be web or native')
  if (appType === 'web' && native) {
    throw new OAuthError('invalid_redirect_uri', 'A web application must use https redirect URIs (loopback and custom schemes are for native apps)')
  }

  const metadata: Record<string, unknown> = {}
  for (const field of URL_FIELDS) {
    const v = body[field]
    if (v === undefined) continue
    if (typeof v !== 'string' || v.length > MAX_STRING) throw bad(`${field} must be a URL`)
    let url: URL
    try {
      url = new URL(v)
    } catch {
      throw bad(`${field} must be a URL`)
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw bad(`${field} must be an http(s) URL`)
    metadata[field] = v
  }
  for (const field of STRING_FIELDS) {
    const v = body[field]
    if (v === undefined) continue
    if (typeof v !== 'string' || v.length > 200) throw bad(`${field} must be a string of at most 200 characters`)
    metadata[field] = v
  }
  const contacts = stringArray(body.contacts, 'contacts')
  if (contacts !== undefined) {
    if (contacts.length > 10 || contacts.some(c => c.length > 320)) throw bad('contacts: at most 10 addresses')
    metadata.contacts = contacts
  }
  if (body.jwks !== undefined || body.jwks_uri !== undefined) throw bad('jwks and jwks_uri are not supported (no private_key_jwt)')

  const name = body.client_name
  if (name !== undefined && (typeof name !== 'string' || name.length > 200)) throw bad('client_name must be a string of at most 200 characters')
  if (typeof name === 'string' && hasUnsafeDisplayChars(name)) throw bad('client_name must not contain control or text-direction characters')
  let scope: string | undefined
  if (body.scope !== undefined) {
    if (typeof body.scope !== 'string' || body.scope.length > MAX_STRING) throw bad('scope must be a space-separated string')
    scope = registeredScope(body.scope, config.scopes)
  }

  const result: ValidatedMetadata = {
    redirectUris,
    tokenEndpointAuthMethod: method,
    grantTypes: [...new Set(grantTypes)],
    responseTypes,
    applicationType: appType,
    metadata
  }
  if (typeof name === 'string' && name.trim() !== '') result.clientName = name.trim()
  if (scope !== undefined) result.scope = scope
  return result
}

function stringArray (v: unknown, field: string): string[] | undefined {
  if (v === undefined) return undefined
  if (!Array.isArray(v) || v.some(x => typeof x !== 'string' || x.length > MAX_STRING) || v.length > 50) {
    throw bad(`${field} must be an array of strings`)
  }
  return [...v] as string[]
}

/**
 * RFC 7591 dynamic registration and RFC 7592 management. Secrets and registration access tokens are
 * shown once and stored as SHA-256 hashes; reads and updates rotate the registration access token
 * (RFC 7592 §3 allows it), since the old one cannot be shown again.
 */
export class RegistrationService {
  readonly #d: RegistrationDeps

  constructor (deps: RegistrationDeps) {
    this.#d = deps
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

  /** In mode "token": may a client without the initial access token hold these redirect URIs? */
  #trusted (uris: unknown): boolean {
    const schemes = this.#d.config.registration.trustedSchemes
    return schemes.length > 0 && Array.isArray(uris) && uris.length > 0 &&
      uris.every(u => typeof u === 'string' && schemes.some(s => u.toLowerCase().startsWith(`${s}:`)))
  }

  async register (body: unknown, registeredFrom: string, withToken = false): Promise<ClientInformation> {
    const meta = validateClientMetadata(body, this.#d.config)
    const now = this.#d.now()
    const { maxClientsPerIp, unusedClientTtlSeconds } = this.#d.config.registration
    if (maxClientsPerIp > 0 && await this.#d.store.countClientsFrom(registeredFrom, now) >= maxClientsPerIp) {
      throw new OAuthError('slow_down', 'Too many clients registered from this address; try again later', { statusCode: 429 })
    }
    const registrationToken = generateToken('registrationToken')
    const secret = meta.tokenEndpointAuthMethod === 'none' ? undefined : generateToken('clientSecret')
    const record: ClientRecord = {
      clientId: `mcp_${generateId()}`,
      ...metadataFields(meta),
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
      if (typeof b.client_secret !== 'string' || client.clientSecretHash === undefined || !safeEqual(hashToken(b.client_secret), client.clientSecretHash)) {
        throw new OAuthError('invalid_request', 'client_secret does not match')
      }
    }
    const meta = validateClientMetadata(body, this.#d.config)
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
      ...metadataFields(meta),
      clientIdIssuedAt: client.clientIdIssuedAt,
      source: client.source,
      registrationTokenHash: hashToken(registrationToken)
    }
    if (client.registeredFrom !== undefined) updated.registeredFrom = client.registeredFrom
    if (client.registeredWithToken === true) updated.registeredWithToken = true
    if (client.expiresAt !== undefined) updated.expiresAt = client.expiresAt
    if (meta.tokenEndpointAuthMethod !== 'none') {
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
   * busy client is written at most about once an hour; other uses cost nothing.
   */
  async keepAlive (client: ClientRecord): Promise<void> {
    const { registration, ttl } = this.#d.config
    const unused = registration.unusedClientTtlSeconds * 1000
    if (client.source !== 'dcr' || unused === 0) return
    const now = this.#d.now()
    const keep = Math.max(unused, ttl.refreshToken * 1000, ttl.accessToken * 1000)
    if (client.expiresAt !== undefined && client.expiresAt >= now + keep) return
    const expiresAt = now + keep + renewSlack(keep)
    if (this.#d.store.renewClient !== undefined) {
      await this.#d.store.renewClient(client.clientId, expiresAt, now)
    } else {
      // A store written for an earlier version: read and write back (a concurrent RFC 7592 update may
      // win or lose against it, as before renewClient existed).
      const current = await this.#d.store.getClient(client.clientId, now)
      if (current !== null && (current.expiresAt === undefined || current.expiresAt < expiresAt)) await this.#d.store.saveClient({ ...current, expiresAt })
    }
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
      !safeEqual(hashToken(m[1] as string), client.registrationTokenHash)) throw deny
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
    if (client.scope !== undefined) info.scope = client.scope
    return info
  }
}
