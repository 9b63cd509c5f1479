import { OAuthError } from '../errors.js'
import type { ClientRecord } from '../storage/contract.js'
import { hashToken, safeEqual } from '../oauth/tokens.js'

export interface ClientCredentials {
  /** The Authorization header, if any. */
  authorization: string | undefined
  body: Record<string, unknown>
}

function invalidClient (description: string, basic: boolean): OAuthError {
  return new OAuthError('invalid_client', description, basic ? { headers: { 'www-authenticate': 'Basic realm="oauth"' } } : {})
}

/** RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined and base64-encoded. */
function parseBasic (header: string): { id: string, secret: string } | null {
  const m = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header)
  if (m === null) return null
  const decoded = Buffer.from(m[1] as string, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) return null
  try {
    return {
      id: decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' ')),
      secret: decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, ' '))
    }
  } catch {
    return null
  }
}

/**
 * Client authentication at the token, revocation and introspection endpoints: exactly one method,
 * the one the client registered. Secrets are compared as SHA-256 hashes in constant time.
 */
export async function authenticateClient (
  creds: ClientCredentials,
  findClient: (clientId: string) => Promise<ClientRecord | null>,
  now: number
): Promise<ClientRecord> {
  const header = creds.authorization
  const usesBasic = header !== undefined && /^basic(?: |$)/i.test(header)
  const bodyId = creds.body.client_id
  const bodySecret = creds.body.client_secret
  if (bodyId !== undefined && typeof bodyId !== 'string') throw new OAuthError('invalid_request', 'client_id must be given once')
  if (bodySecret !== undefined && typeof bodySecret !== 'string') throw new OAuthError('invalid_request', 'client_secret must be given once')

  let clientId: string
  let secret: string | undefined
  let method: ClientRecord['tokenEndpointAuthMethod']
  if (usesBasic) {
    if (bodySecret !== undefined) throw new OAuthError('invalid_request', 'Use one client authentication method, not several')
    const parsed = parseBasic(header)
    if (parsed === null) throw invalidClient('Malformed Basic credentials', true)
    if (bodyId !== undefined && bodyId !== parsed.id) throw new OAuthError('invalid_request', 'client_id differs from the authenticated client')
    clientId = parsed.id
    secret = parsed.secret
    method = 'client_secret_basic'
  } else if (bodySecret !== undefined) {
    if (bodyId === undefined) throw invalidClient('client_id is required with client_secret', false)
    clientId = bodyId
    secret = bodySecret
    method = 'client_secret_post'
  } else {
    if (bodyId === undefined || bodyId === '') throw invalidClient('Client authentication is required (client_id)', false)
    clientId = bodyId
    method = 'none'
  }

  const client = clientId.length > 2048 ? null : await findClient(clientId)
  if (client === null) throw invalidClient('Unknown client', usesBasic)
  if (client.tokenEndpointAuthMethod !== method) {
    throw invalidClient(`This client must authenticate with ${client.tokenEndpointAuthMethod}`, usesBasic)
  }
  if (method !== 'none') {
    const ok = client.clientSecretHash !== undefined && safeEqual(hashToken(secret as string), client.clientSecretHash)
    if (!ok) throw invalidClient('Client authentication failed', usesBasic)
    const expires = client.clientSecretExpiresAt ?? 0
    if (expires !== 0 && expires * 1000 <= now) throw invalidClient('The client secret has expired', usesBasic)
  }
  return client
}
