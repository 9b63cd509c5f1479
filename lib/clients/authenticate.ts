import { OAuthError } from '../errors.js'
import type { ClientAuthMethod, ClientRecord } from '../storage/contract.js'
import { hashToken, safeEqual } from '../oauth/tokens.js'

/**
 * Client authentication (RFC 6749 §2.3) at the token, revocation and introspection endpoints:
 * exactly one method per request, the one the client registered. A method is two steps: what the
 * request presents (`present`), then whether that proves the client (`verifiers`); a new method
 * (private_key_jwt, RFC 7523) is one more of each. Secrets are compared as SHA-256 hashes in
 * constant time.
 */

export interface ClientCredentials {
  /** The Authorization header, if any. */
  authorization: string | undefined
  /** The body's RFC 6749 §2.3.1 parameters (the route's schema makes each a single string). */
  body: { client_id?: string, client_secret?: string }
}

/** What a request presents: the method it uses, the client it names and its proof. */
interface Presented {
  method: ClientAuthMethod
  clientId: string
  /** The shared secret (client_secret_basic, client_secret_post). */
  secret?: string
}

/** Does what was presented prove this client? Throws invalid_client if not. */
type Verifier = (client: ClientRecord, presented: Presented, now: number) => void | Promise<void>

/** An introspection caller: a configured resource server, or a confidential client. */
export interface Introspector {
  clientId: string
  resourceServer: boolean
}

/** A resource server allowed to introspect every token, with its secret's hash. */
export interface ResourceServerCredential {
  id: string
  secretHash: string
}

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
  const part = (value: string): string | null => {
    try {
      return decodeURIComponent(value.replace(/\+/g, ' '))
    } catch {
      // Resource servers configured before the encoding was enforced may send a raw '%': lenient
      // parsing takes such a part as it is (the secret comparison still decides).
      return lenient ? value : null
    }
  }
  const id = part(decoded.slice(0, colon))
  const secret = part(decoded.slice(colon + 1))
  return id === null || secret === null ? null : { id, secret }
}

/** The one method a request uses; two at once is a malformed request. */
function present (creds: ClientCredentials): Presented {
  const header = creds.authorization
  const { client_id: bodyId, client_secret: bodySecret } = creds.body
  if (header !== undefined && /^basic(?: |$)/i.test(header)) {
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

const verifySecret: Verifier = (client, presented, now) => {
  const ok = client.clientSecretHash !== undefined && safeEqual(hashToken(presented.secret as string), client.clientSecretHash)
  if (!ok) throw invalidClient('Client authentication failed', presented)
  const expires = client.clientSecretExpiresAt ?? 0
  if (expires !== 0 && expires * 1000 <= now) throw invalidClient('The client secret has expired', presented)
}

const verifiers: Record<ClientAuthMethod, Verifier> = {
  // A public client proves nothing here: PKCE and the redirect URI bind its code.
  none: () => {},
  client_secret_basic: verifySecret,
  client_secret_post: verifySecret
}

/** Authenticate the client of a token, revocation or introspection request. */
export async function authenticateClient (
  creds: ClientCredentials,
  findClient: (clientId: string) => Promise<ClientRecord | null>,
  now: number
): Promise<ClientRecord> {
  const presented = present(creds)
  const client = presented.clientId.length > 2048 ? null : await findClient(presented.clientId)
  if (client === null) throw invalidClient('Unknown client', presented)
  if (client.tokenEndpointAuthMethod !== presented.method) {
    throw invalidClient(`This client must authenticate with ${client.tokenEndpointAuthMethod}`, presented)
  }
  await verifiers[presented.method](client, presented, now)
  return client
}

/** The configured resource servers' credentials, hashed once. */
export function resourceServerCredentials (servers: ReadonlyArray<{ id: string, secret: string }>): ResourceServerCredential[] {
  return servers.map(s => ({ id: s.id, secretHash: hashToken(s.secret) }))
}

/**
 * RFC 7662 §2.1: who may introspect. A configured resource server (HTTP Basic) sees every token; a
 * client must be confidential and sees its own.
 */
export async function authenticateIntrospector (
  creds: ClientCredentials,
  servers: readonly ResourceServerCredential[],
  findClient: (clientId: string) => Promise<ClientRecord | null>,
  now: number
): Promise<Introspector> {
  const basic = creds.authorization === undefined ? null : parseBasic(creds.authorization, true)
  const server = basic === null ? undefined : servers.find(s => s.id === basic.id)
  if (basic !== null && server !== undefined) {
    if (!safeEqual(hashToken(basic.secret), server.secretHash)) throw new OAuthError('invalid_client', 'Client authentication failed', { headers: BASIC_CHALLENGE })
    return { clientId: server.id, resourceServer: true }
  }
  const client = await authenticateClient(creds, findClient, now)
  if (client.tokenEndpointAuthMethod === 'none') {
    throw new OAuthError('invalid_client', 'Introspection requires an authenticated (confidential) client')
  }
  return { clientId: client.clientId, resourceServer: false }
}
