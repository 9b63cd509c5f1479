import { OAuthError } from '../errors.js'
import type { ClientRecord } from '../storage/contract.js'
import { checkRedirectUri, type RedirectPolicy } from '../oauth/redirect.js'
import { registeredScope } from '../oauth/scopes.js'
import { hasUnsafeDisplayChars } from '../oauth/display.js'
import { JWT_BEARER_GRANT } from '../oauth/jwt.js'
import { publicKeySetProblem } from '../security/jwks.js'

/**
 * The RFC 7591 client metadata rules, one set for a registration body (RFC 7591/7592) and for a
 * Client ID Metadata Document (`document`). A document is public and names itself, so it has
 * stricter rules of its own (its client_id, no secret, auth method "none" or "private_key_jwt", a client_name); where
 * the two readings differ otherwise (limits, defaults, descriptions), `document` carries it.
 * The order of the checks decides which fault of several is reported: it is kept as it is.
 */
export interface MetadataRules {
  redirects: RedirectPolicy
  /** The scopes this server grants: a `scope` keeps only these. Without them it is kept as given. */
  scopes?: readonly string[]
  /** Registration: may a client register with token_endpoint_auth_method "none"? */
  allowPublicClients?: boolean
  /**
   * Registration: may the client hold client_credentials (a machine client)? Only one registered
   * with the initial access token: the grant needs no user, so an open registration must not hand it out.
   */
  allowClientCredentials?: boolean
  /** Registration: may the client hold the jwt-bearer grant (an enterprise IdP is trusted)? Confidential clients only. */
  allowJwtBearer?: boolean
  /** A metadata document, with the URL (its client_id) it was fetched from. */
  document?: string
}

/** The client record's fields that come from its metadata. */
export type ValidatedMetadata = Pick<ClientRecord,
  'redirectUris' | 'tokenEndpointAuthMethod' | 'jwks' | 'jwksUri' | 'grantTypes' | 'responseTypes' | 'applicationType' | 'clientName' | 'scope' | 'metadata'>

/** Optional metadata echoed as registered: URLs are checked, strings bounded. */
const URL_FIELDS = ['client_uri', 'logo_uri', 'tos_uri', 'policy_uri'] as const
const STRING_FIELDS = ['software_id', 'software_version'] as const
const MAX_STRING = 2000
const MAX_REDIRECTS = 20
const SHARED_SECRET_METHODS = new Set(['client_secret_basic', 'client_secret_post', 'client_secret_jwt'])

/** A metadata document refused: the client is unknown to this server until its document is right. */
export function documentError (reason: string, cause?: unknown): OAuthError {
  return new OAuthError('invalid_client', `Client ID metadata document: ${reason}`, cause === undefined ? {} : { cause })
}

/**
 * Validate client metadata. A registration body is refused with invalid_client_metadata or
 * invalid_redirect_uri (400), a document with invalid_client (401).
 */
export function validateClientMetadata (input: unknown, rules: MetadataRules): ValidatedMetadata {
  const document = rules.document !== undefined
  const refuse = (description: string, code: 'invalid_client_metadata' | 'invalid_redirect_uri' = 'invalid_client_metadata'): OAuthError =>
    document ? documentError(description) : new OAuthError(code, description)
  // Registration bounds every list; a document is bounded by its byte cap.
  const stringArray = (v: unknown, field: string): string[] => {
    if (!Array.isArray(v) || v.some(x => typeof x !== 'string' || (!document && x.length > MAX_STRING)) || (!document && v.length > 50)) {
      throw refuse(`${field} must be an array of strings`)
    }
    return [...v] as string[]
  }

  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw refuse('The body must be a JSON object of client metadata')
  const body = input as Record<string, unknown>
  let documentName: string | undefined
  if (document) {
    if (body.client_id !== rules.document) throw refuse('client_id in the document does not equal the URL it was fetched from')
    if (body.client_secret !== undefined || body.client_secret_expires_at !== undefined) {
      throw refuse('the document must not contain a client_secret: a public document cannot hold a secret')
    }
    const method = body.token_endpoint_auth_method
    if (method !== undefined && method !== 'none' && method !== 'private_key_jwt') {
      if (typeof method === 'string' && SHARED_SECRET_METHODS.has(method)) {
        throw refuse(`token_endpoint_auth_method "${method}" needs a shared secret, which a public document cannot hold; use "none" or "private_key_jwt"`)
      }
      throw refuse('token_endpoint_auth_method must be "none" or "private_key_jwt"')
    }
    documentName = typeof body.client_name === 'string' ? body.client_name.trim() : ''
    if (documentName === '') throw refuse('client_name is required')
    if (documentName.length > 200 || hasUnsafeDisplayChars(documentName)) throw refuse('client_name must be at most 200 characters, without control or text-direction characters')
  }

  // A machine client (grant_types without authorization_code) has no redirect URI to register.
  const machine = !document && Array.isArray(body.grant_types) && !body.grant_types.includes('authorization_code')
  let uris: unknown[]
  if (document) {
    if (body.redirect_uris === undefined) throw refuse('redirect_uris is required')
    uris = [...new Set(stringArray(body.redirect_uris, 'redirect_uris'))]
    if (uris.length === 0) throw refuse('redirect_uris must not be empty')
  } else if (machine && (body.redirect_uris === undefined || (Array.isArray(body.redirect_uris) && body.redirect_uris.length === 0))) {
    uris = []
  } else {
    if (!Array.isArray(body.redirect_uris) || body.redirect_uris.length === 0) throw refuse('redirect_uris must be a non-empty array', 'invalid_redirect_uri')
    if (body.redirect_uris.length > MAX_REDIRECTS) throw refuse(`At most ${MAX_REDIRECTS} redirect_uris`, 'invalid_redirect_uri')
    uris = body.redirect_uris
  }
  const native = uris.map((u, i) => {
    if (typeof u !== 'string') throw refuse(`redirect_uris[${i}] must be a string`, 'invalid_redirect_uri')
    const check = checkRedirectUri(u, rules.redirects)
    if (!check.ok) throw refuse(`redirect_uris[${i}] ${check.reason}`, 'invalid_redirect_uri')
    return check.kind === 'loopback' || check.kind === 'custom'
  })
  const redirectUris = [...new Set(uris as string[])]

  const method = body.token_endpoint_auth_method ?? (document ? 'none' : 'client_secret_basic')
  if (method !== 'none' && method !== 'client_secret_basic' && method !== 'client_secret_post' && method !== 'private_key_jwt') {
    throw refuse('token_endpoint_auth_method must be none, client_secret_basic, client_secret_post or private_key_jwt')
  }
  if (!document && method === 'none' && rules.allowPublicClients !== true) throw refuse('Public clients (token_endpoint_auth_method "none") are not accepted here')
  const keys = method === 'private_key_jwt' ? clientKeys(body, refuse) : {}
  // A document may carry keys for other uses; a registration gets only what this server uses.
  if (!document && method !== 'private_key_jwt' && (body.jwks !== undefined || body.jwks_uri !== undefined)) {
    throw refuse('jwks and jwks_uri are used with token_endpoint_auth_method "private_key_jwt" only')
  }

  const grants = body.grant_types === undefined ? ['authorization_code'] : stringArray(body.grant_types, 'grant_types')
  const unknownGrant = grants.find(g => g !== 'authorization_code' && g !== 'refresh_token' && (document || g !== 'client_credentials') &&
    (document || rules.allowJwtBearer !== true || g !== JWT_BEARER_GRANT))
  if (unknownGrant !== undefined) {
    throw refuse(document ? 'grant_types may only contain authorization_code and refresh_token' : `Unsupported grant type: ${unknownGrant.slice(0, 50)}`)
  }
  if (grants.includes('client_credentials')) {
    if (rules.allowClientCredentials !== true) throw refuse('client_credentials may only be registered with the initial access token')
    if (method === 'none') throw refuse('client_credentials needs a confidential client: token_endpoint_auth_method client_secret_basic, client_secret_post or private_key_jwt')
  }
  if (grants.includes(JWT_BEARER_GRANT) && method === 'none') {
    throw refuse(`${JWT_BEARER_GRANT} needs a confidential client: token_endpoint_auth_method client_secret_basic or client_secret_post`)
  }
  if (!grants.includes('authorization_code') && !grants.includes('client_credentials') && !grants.includes(JWT_BEARER_GRANT)) {
    throw refuse(rules.allowClientCredentials === true ? 'grant_types must include authorization_code or client_credentials' : 'grant_types must include authorization_code')
  }
  // Every code exchange returns a refresh token, so the client is registered for using it.
  const grantTypes = document ? ['authorization_code', 'refresh_token'] : machine ? [...new Set(grants)] : [...new Set([...grants, 'refresh_token'])]
  if (machine && grants.includes('refresh_token')) throw refuse('refresh_token comes only with authorization_code')
  const responseTypes = body.response_types === undefined ? (machine ? [] : ['code']) : stringArray(body.response_types, 'response_types')
  if (machine) {
    if (responseTypes.length > 0) throw refuse('response_types must be empty without authorization_code')
  } else if (document ? responseTypes.length === 0 || responseTypes.some(r => r !== 'code') : responseTypes.length !== 1 || responseTypes[0] !== 'code') {
    throw refuse(document ? 'response_types may only contain code' : 'response_types must be ["code"]')
  }
  if (document && body.scope !== undefined && typeof body.scope !== 'string') throw refuse('scope must be a string')

  // A document's client is native when every redirect is; a registration's unless it says "web".
  const appType = document ? (native.every(Boolean) ? 'native' : 'web') : body.application_type ?? (native.some(Boolean) ? 'native' : 'web')
  if (appType !== 'web' && appType !== 'native') throw refuse('application_type must be web or native')
  if (!document && appType === 'web' && native.some(Boolean)) {
    throw refuse('A web application must use https redirect URIs (loopback and custom schemes are for native apps)', 'invalid_redirect_uri')
  }

  const metadata: Record<string, unknown> = {}
  for (const field of URL_FIELDS) {
    const v = body[field]
    if (v === undefined) continue
    const url = typeof v === 'string' && v.length <= MAX_STRING ? parseUrl(v) : null
    if (document) {
      if (url === null || url.protocol !== 'https:' || url.username !== '' || url.password !== '') throw refuse(`${field} must be an https URL`)
    } else {
      if (url === null) throw refuse(`${field} must be a URL`)
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw refuse(`${field} must be an http(s) URL`)
    }
    metadata[field] = v
  }
  for (const field of STRING_FIELDS) {
    const v = body[field]
    if (v === undefined) continue
    if (typeof v !== 'string') throw refuse(document ? `${field} must be a string` : `${field} must be a string of at most 200 characters`)
    if (!document && v.length > 200) throw refuse(`${field} must be a string of at most 200 characters`)
    metadata[field] = v
  }
  if (body.contacts !== undefined) {
    const contacts = stringArray(body.contacts, 'contacts')
    if (!document && (contacts.length > 10 || contacts.some(c => c.length > 320))) throw refuse('contacts: at most 10 addresses')
    metadata.contacts = contacts
  }

  let clientName = documentName
  let scope: string | undefined
  if (!document) {
    const name = body.client_name
    if (name !== undefined && (typeof name !== 'string' || name.length > 200)) throw refuse('client_name must be a string of at most 200 characters')
    if (typeof name === 'string' && hasUnsafeDisplayChars(name)) throw refuse('client_name must not contain control or text-direction characters')
    if (typeof name === 'string' && name.trim() !== '') clientName = name.trim()
    if (body.scope !== undefined && (typeof body.scope !== 'string' || body.scope.length > MAX_STRING)) throw refuse('scope must be a space-separated string')
  }
  if (typeof body.scope === 'string') scope = rules.scopes === undefined ? body.scope : registeredScope(body.scope, rules.scopes)

  const result: ValidatedMetadata = {
    redirectUris,
    tokenEndpointAuthMethod: method,
    ...keys,
    grantTypes,
    responseTypes: machine ? [] : ['code'],
    applicationType: appType,
    metadata
  }
  if (clientName !== undefined) result.clientName = clientName
  if (scope !== undefined) result.scope = scope
  return result
}

/** RFC 7591 §2: a private_key_jwt client's keys, by value (public keys only) or by an https reference; not both. */
function clientKeys (body: Record<string, unknown>, refuse: (description: string) => OAuthError): Pick<ClientRecord, 'jwks' | 'jwksUri'> {
  const { jwks, jwks_uri: uri } = body
  if ((jwks === undefined) === (uri === undefined)) throw refuse('token_endpoint_auth_method "private_key_jwt" needs exactly one of jwks and jwks_uri')
  if (uri !== undefined) {
    const url = typeof uri === 'string' && uri.length <= MAX_STRING ? parseUrl(uri) : null
    if (url === null || url.protocol !== 'https:' || url.username !== '' || url.password !== '' || url.hash !== '') {
      throw refuse('jwks_uri must be an https URL without user information or fragment')
    }
    return { jwksUri: uri as string }
  }
  const problem = publicKeySetProblem(jwks)
  if (problem !== undefined) throw refuse(`jwks: ${problem}`)
  return { jwks: jwks as NonNullable<ClientRecord['jwks']> }
}

function parseUrl (value: string): URL | null {
  try {
    return new URL(value)
  } catch {
    return null
  }
}
