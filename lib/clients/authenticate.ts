import { createLocalJWKSet, type JWTVerifyGetKey } from 'jose'
import { OAuthError } from '../errors.js'
import type { DecodedAssertion } from '../oauth/jwt.js'
import type { AssertionVerifier } from '../security/assertion.js'
import type { RemoteKeySets } from '../security/jwks.js'
import type { ClientAuthMethod, ClientRecord } from '../storage/contract.js'
import { hashToken, matchesHash } from '../oauth/tokens.js'

/**
 * Client authentication (RFC 6749 §2.3) at the token, revocation and introspection endpoints:
 * exactly one method per request, the one the client registered. A method is two steps: what the
 * request presents (`present`), then whether that proves the client (`verifiers`); a new method
 * (private_key_jwt, RFC 7523 §2.2) is one more of each. Secrets are compared as SHA-256 hashes in
 * constant time; a client assertion goes through the one AssertionVerifier (signature, times,
 * audience, its `jti` spent once) and is never logged or quoted.
 */

/** RFC 7523 §2.2: the client_assertion_type of a JWT client assertion. */
export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'

export interface ClientCredentials {
  /** The Authorization header, if any. */
  authorization: string | undefined
  /** The body's RFC 6749 §2.3.1 parameters (the route's schema makes each a single string). */
  body: { client_id?: string, client_secret?: string, client_assertion?: string, client_assertion_type?: string }
}

/** What a request presents: the method it uses, the client it names and its proof. */
interface Presented {
  method: ClientAuthMethod
  clientId: string
  /** The shared secret (client_secret_basic, client_secret_post). */
  secret?: string
  /** The signed JWT (private_key_jwt), and what decoding it gave (verified next). */
  assertion?: string
  decoded?: DecodedAssertion
}

/** An introspection caller: a configured resource server, or a confidential client. */
export interface Introspector {
  clientId: string
  resourceServer: boolean
}

/** A resource server allowed to introspect every token, with its secret's hash. */
interface ResourceServerCredential {
  id: string
  secretHash: string
}

const ASSERTION_LABEL = { label: 'client assertion', error: 'invalid_client' } as const

const BASIC_CHALLENGE = { 'www-authenticate': 'Basic realm="oauth"' }

/** Refused with the Basic challenge when the credentials came in the header (RFC 6749 §5.2). */
function invalidClient (description: string, presented: { method: ClientAuthMethod }): OAuthError {
  return new OAuthError('invalid_client', description, presented.method === 'client_secret_basic' ? { headers: BASIC_CHALLENGE } : {})
}

/** RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined and base64-encoded. */
function parseBasic (header: string, lenient = false): { id: string, secret: string } | null {
  const m = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header)
  if (m === null) return null
  const decoded = Buffer.from(m[1] as string, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) return null
  const id = formDecoded(decoded.slice(0, colon), lenient)
  const secret = formDecoded(decoded.slice(colon + 1), lenient)
  return id === null || secret === null ? null : { id, secret }
}

/** One form-urlencoded part; null when its escapes are broken (lenient: the part as it is). */
function formDecoded (value: string, lenient: boolean): string | null {
  // Nothing to decode in the usual id and secret (generated ones are base64url).
  if (value.indexOf('%') < 0 && value.indexOf('+') < 0) return value
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '))
  } catch {
    // Resource servers configured before the encoding was enforced may send a raw '%': lenient
    // parsing takes such a part as it is (the secret comparison still decides).
    return lenient ? value : null
  }
}

/** The one method a request uses; two at once is a malformed request. */
function present (creds: ClientCredentials, verifier: AssertionVerifier): Presented {
  const header = creds.authorization
  const { client_id: bodyId, client_secret: bodySecret, client_assertion: assertion, client_assertion_type: assertionType } = creds.body
  const basic = header !== undefined && /^basic(?: |$)/i.test(header)
  if (assertion !== undefined || assertionType !== undefined) {
    if (basic || bodySecret !== undefined) throw new OAuthError('invalid_request', 'Use one client authentication method, not several')
    if (assertion === undefined || assertionType === undefined) {
      throw new OAuthError('invalid_request', 'client_assertion and client_assertion_type must be sent together')
    }
    if (assertionType !== CLIENT_ASSERTION_TYPE) throw new OAuthError('invalid_client', `client_assertion_type must be ${CLIENT_ASSERTION_TYPE}`)
    // RFC 7523 §3: the client is the assertion's issuer; the signature is checked once the client is known.
    const decoded = verifier.decode(assertion, ASSERTION_LABEL)
    const { iss } = decoded.claims
    if (bodyId !== undefined && bodyId !== iss) throw new OAuthError('invalid_client', 'client_id differs from the client assertion\'s issuer ("iss")')
    return { method: 'private_key_jwt', clientId: iss, assertion, decoded }
  }
  if (basic) {
    if (bodySecret !== undefined) throw new OAuthError('invalid_request', 'Use one client authentication method, not several')
    const parsed = parseBasic(header)
    if (parsed === null) throw new OAuthError('invalid_client', 'Malformed Basic credentials', { headers: BASIC_CHALLENGE })
    if (bodyId !== undefined && bodyId !== parsed.id) throw new OAuthError('invalid_request', 'client_id differs from the authenticated client')
    return { method: 'client_secret_basic', clientId: parsed.id, secret: parsed.secret }
  }
  if (bodySecret !== undefined) {
    if (bodyId === undefined) throw new OAuthError('invalid_client', 'client_id is required with client_secret')
    return { method: 'client_secret_post', clientId: bodyId, secret: bodySecret }
  }
  if (bodyId === undefined || bodyId === '') throw new OAuthError('invalid_client', 'Client authentication is required (client_id)')
  return { method: 'none', clientId: bodyId }
}

function verifySecret (client: ClientRecord, presented: Presented, now: number): void {
  const ok = client.clientSecretHash !== undefined && matchesHash(presented.secret as string, client.clientSecretHash)
  if (!ok) throw invalidClient('Client authentication failed', presented)
  const expires = client.clientSecretExpiresAt ?? 0
  if (expires !== 0 && expires * 1000 <= now) throw invalidClient('The client secret has expired', presented)
}

export interface ClientAuthenticationDeps {
  findClient: (clientId: string) => Promise<ClientRecord | null>
  /** The registration's one assertion verifier (its replay cache is the store's). */
  verifier: AssertionVerifier
  /** The registration's cache of clients' `jwks_uri` key sets. */
  keySets: RemoteKeySets
  issuer: string
  tokenEndpoint: string
  /** The resource servers allowed to introspect every token (RFC 7662 §2.1). */
  resourceServers: ReadonlyArray<{ id: string, secret: string }>
  now: () => number
}

/** Most clients' inline key sets kept ready for verification (least recently used go first). */
const MAX_LOCAL_KEY_SETS = 1000

/**
 * Client authentication as the token, revocation and introspection endpoints use it: built once per
 * plugin registration, with the verifier, the key-set caches and the audiences a client assertion may
 * name.
 */
export class ClientAuthentication {
  readonly #d: ClientAuthenticationDeps
  readonly #audiences: readonly string[]
  readonly #servers: readonly ResourceServerCredential[]
  /** client id -> its inline `jwks` as JSON and the key source made from it. */
  readonly #localKeys = new Map<string, { json: string, keys: JWTVerifyGetKey }>()

  constructor (deps: ClientAuthenticationDeps) {
    this.#d = deps
    // RFC 7523 §3: the token endpoint or the issuer; clients differ on the trailing slash.
    this.#audiences = [deps.tokenEndpoint, deps.issuer].flatMap(url => [url, `${url}/`])
    this.#servers = deps.resourceServers.map(s => ({ id: s.id, secretHash: hashToken(s.secret) }))
  }

  /** Authenticate the client of a token, revocation or introspection request. */
  async client (creds: ClientCredentials): Promise<ClientRecord> {
    const presented = present(creds, this.#d.verifier)
    const client = presented.clientId.length > 2048 ? null : await this.#d.findClient(presented.clientId)
    if (client === null) throw invalidClient('Unknown client', presented)
    if (client.tokenEndpointAuthMethod !== presented.method) {
      throw invalidClient(`This client must authenticate with ${client.tokenEndpointAuthMethod}`, presented)
    }
    switch (presented.method) {
      // A public client proves nothing here: PKCE and the redirect URI bind its code.
      case 'none': break
      case 'private_key_jwt':
        await this.#d.verifier.verify(presented.assertion as string, {
          ...ASSERTION_LABEL,
          keys: this.#keysOf(client),
          issuer: client.clientId,
          subject: client.clientId,
          audience: this.#audiences
        }, presented.decoded)
        break
      default: verifySecret(client, presented, this.#d.now())
    }
    return client
  }

  /**
   * RFC 7662 §2.1: who may introspect. A configured resource server (HTTP Basic) sees every token; a
   * client must be confidential and sees its own.
   */
  async introspector (creds: ClientCredentials): Promise<Introspector> {
    const basic = creds.authorization === undefined ? null : parseBasic(creds.authorization, true)
    const server = basic === null ? undefined : this.#servers.find(s => s.id === basic.id)
    if (basic !== null && server !== undefined) {
      if (creds.body.client_assertion !== undefined) throw new OAuthError('invalid_request', 'Use one client authentication method, not several')
      if (!matchesHash(basic.secret, server.secretHash)) throw new OAuthError('invalid_client', 'Client authentication failed', { headers: BASIC_CHALLENGE })
      return { clientId: server.id, resourceServer: true }
    }
    const client = await this.client(creds)
    if (client.tokenEndpointAuthMethod === 'none') {
      throw new OAuthError('invalid_client', 'Introspection requires an authenticated (confidential) client')
    }
    return { clientId: client.clientId, resourceServer: false }
  }

  /** The client's key source: its inline set (made once, remade when it changes) or its jwks_uri's. */
  #keysOf (client: ClientRecord): JWTVerifyGetKey {
    if (client.jwksUri !== undefined) return this.#d.keySets.keys(client.jwksUri)
    if (client.jwks === undefined) throw new OAuthError('invalid_client', 'The client assertion was refused: this client has no registered keys')
    const json = JSON.stringify(client.jwks)
    const cached = this.#localKeys.get(client.clientId)
    this.#localKeys.delete(client.clientId)
    const keys = cached?.json === json ? cached.keys : createLocalJWKSet(client.jwks)
    for (const oldest of this.#localKeys.keys()) {
      if (this.#localKeys.size < MAX_LOCAL_KEY_SETS) break
      this.#localKeys.delete(oldest)
    }
    this.#localKeys.set(client.clientId, { json, keys })
    return keys
  }
}
