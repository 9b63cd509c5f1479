import type { JWTVerifyGetKey } from 'jose'
import { OAuthError } from '../../errors.js'
import type { ResolvedConfig, ResolvedResource, TrustedIssuer } from '../../options/index.js'
import type { AssertionVerifier } from '../../security/assertion.js'
import type { Auditor } from '../../security/audit.js'
import { cacheSeconds, type SafeFetcher } from '../../security/fetch.js'
import type { RemoteKeySets } from '../../security/jwks.js'
import type { ClientRecord } from '../../storage/contract.js'
import { JWT_BEARER_GRANT, type DecodedAssertion } from '../../oauth/jwt.js'
import { matchResource } from '../../oauth/resource.js'
import { clientMayHold, decideScopes } from '../../oauth/scopes.js'
import type { GrantService, TokenResponse } from '../issue.js'

/** The Identity Assertion Authorization Grant profile, as authorization server metadata names it. */
export const ID_JAG_PROFILE = 'urn:ietf:params:oauth:grant-profile:id-jag'
const ID_JAG_TYP = 'oauth-id-jag+jwt'
const LABEL = 'ID-JAG'

/** How long a failed metadata discovery is the answer before it is tried again. */
const DISCOVERY_RETRY_MS = 30_000

function refused (reason: string): OAuthError {
  return new OAuthError('invalid_grant', `The ${LABEL} was refused: ${reason}`)
}

/** Issuers compare as strings, except that one "/" at the end does not count. */
function issuerKey (issuer: string): string {
  return issuer.endsWith('/') ? issuer.slice(0, -1) : issuer
}

/** A discovery's answer: the key set's URI, or why there is none; it stands until `until` (epoch ms). */
type Discovered = { jwksUri: string, until: number } | { jwksUri?: undefined, failure: string, until: number }

/**
 * The trusted enterprise identity providers and their signing keys: a configured `jwks_uri`, or the
 * one their metadata names (OpenID Connect discovery, else RFC 8414), looked up on first use through
 * the SSRF-safe fetcher and kept as long as its caching headers allow (within [5 min, 24 h]); a
 * failed lookup is the answer for 30 s. The key sets themselves are RemoteKeySets' (one per plugin).
 */
export class TrustedIssuers {
  readonly #byKey: ReadonlyMap<string, TrustedIssuer>
  readonly #fetcher: SafeFetcher
  readonly #keySets: Pick<RemoteKeySets, 'keys'>
  readonly #now: () => number
  readonly #discovered = new Map<string, Discovered>()
  readonly #pending = new Map<string, Promise<Discovered>>()

  constructor (opts: { issuers: readonly TrustedIssuer[], fetcher: SafeFetcher, keySets: Pick<RemoteKeySets, 'keys'>, now: () => number }) {
    this.#byKey = new Map(opts.issuers.map(i => [issuerKey(i.issuer), i]))
    this.#fetcher = opts.fetcher
    this.#keySets = opts.keySets
    this.#now = opts.now
  }

  find (iss: string): TrustedIssuer | undefined {
    return this.#byKey.get(issuerKey(iss))
  }

  /** The issuer's key source; throws OAuthError (invalid_grant) when its metadata cannot be had. */
  async keys (issuer: TrustedIssuer): Promise<JWTVerifyGetKey> {
    if (issuer.jwksUri !== undefined) return this.#keySets.keys(issuer.jwksUri)
    let found = this.#discovered.get(issuer.issuer)
    if (found === undefined || found.until <= this.#now()) found = await this.#discover(issuer.issuer)
    if (found.jwksUri === undefined) throw refused(`the metadata of its issuer could not be fetched: ${found.failure}`)
    return this.#keySets.keys(found.jwksUri)
  }

  #discover (issuer: string): Promise<Discovered> {
    const inFlight = this.#pending.get(issuer)
    if (inFlight !== undefined) return inFlight
    const pending = this.#lookUp(issuer).then(found => {
      this.#discovered.set(issuer, found)
      return found
    }).finally(() => this.#pending.delete(issuer))
    this.#pending.set(issuer, pending)
    return pending
  }

  /** OpenID Connect discovery first (what SSO IdPs publish), then RFC 8414; never throws. */
  async #lookUp (issuer: string): Promise<Discovered> {
    const url = new URL(issuer)
    const path = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '')
    const candidates = [
      `${url.origin}${path}/.well-known/openid-configuration`,
      `${url.origin}/.well-known/oauth-authorization-server${path}`
    ]
    const failures: string[] = []
    for (const candidate of candidates) {
      try {
        const { body, headers } = await this.#fetcher.get(new URL(candidate))
        const jwksUri = metadataKeys(body, issuer)
        return { jwksUri, until: this.#now() + cacheSeconds(headers, 300, 86400) * 1000 }
      } catch (err) {
        // The fetcher's and the parser's reasons name URLs the operator configured, never a secret.
        failures.push((err as Error).message)
      }
    }
    return { failure: failures.join('; '), until: this.#now() + DISCOVERY_RETRY_MS }
  }
}

/** The `jwks_uri` of an issuer's metadata document, which must name that issuer. */
function metadataKeys (body: Buffer, issuer: string): string {
  let doc: unknown
  try {
    doc = JSON.parse(body.toString('utf8'))
  } catch {
    throw new Error('the metadata is not JSON')
  }
  const { issuer: named, jwks_uri: jwksUri } = (doc ?? {}) as { issuer?: unknown, jwks_uri?: unknown }
  if (typeof named !== 'string' || issuerKey(named) !== issuerKey(issuer)) throw new Error('the metadata names another issuer')
  if (typeof jwksUri !== 'string' || !URL.canParse(jwksUri)) throw new Error('the metadata has no jwks_uri')
  return jwksUri
}

export interface JwtBearerDeps {
  config: ResolvedConfig
  verifier: Pick<AssertionVerifier, 'decode' | 'verify'>
  issuers: Pick<TrustedIssuers, 'find' | 'keys'>
  grants: Pick<GrantService, 'createAccessGrant'>
  auditor: Auditor
}

/** The parameters of grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer (RFC 7523 §2.1, RFC 8707). */
export interface JwtBearerRequest {
  assertion?: string
  scope?: string
  resource?: string
}

/**
 * Enterprise-Managed Authorization (draft-ietf-oauth-identity-assertion-authz-grant, the MCP
 * extension): a confidential client presents an ID-JAG its user's enterprise IdP issued for this
 * authorization server, and gets an access token for that user without a browser. No refresh token:
 * the client asks the IdP for a new ID-JAG, so the IdP's policy is applied every time.
 *
 * In order: the client, the assertion's shape and issuer (decoded, not yet trusted), then the
 * verifier (typ, aud, times, signature with the issuer's keys), the claims against the request
 * (client_id, resource, scope), and last the one use of its jti. Only then is anything written.
 */
export class JwtBearerGrant {
  readonly #d: JwtBearerDeps
  readonly #audience: readonly string[]

  constructor (deps: JwtBearerDeps) {
    this.#d = deps
    // The draft asks for the issuer identifier; the MCP extension writes its example with a "/".
    this.#audience = [deps.config.issuer, `${deps.config.issuer}/`]
  }

  /** Throws OAuthError. */
  async exchange (client: ClientRecord, { assertion, scope, resource }: JwtBearerRequest): Promise<TokenResponse> {
    if (client.tokenEndpointAuthMethod === 'none') {
      throw new OAuthError('unauthorized_client', 'The jwt-bearer grant is for confidential clients only')
    }
    if (assertion === undefined || assertion === '') throw new OAuthError('invalid_request', 'assertion is required (the ID-JAG)')
    const { verifier, issuers } = this.#d
    const rules = { label: LABEL, error: 'invalid_grant' } as const
    // Unverified: only to choose the key source; verify() checks every claim again.
    const unverified = verifier.decode(assertion, rules)
    const trusted = issuers.find(unverified.claims.iss)
    if (trusted === undefined) throw refused('its issuer ("iss") is not a trusted identity provider')
    let decision: { resource: ResolvedResource, scopes: string[] } | undefined
    const { claims } = await verifier.verify(assertion, {
      ...rules,
      keys: await issuers.keys(trusted),
      audience: this.#audience,
      typ: ID_JAG_TYP,
      accept: decoded => { decision = this.#decide(client, decoded, { scope, resource }) }
    }, unverified)
    /* c8 ignore next */
    if (decision === undefined) throw new Error('the verifier skipped the ID-JAG checks')
    // The upstream IdP's subjects are the user ids its logins give; another IdP's live in its own namespace.
    const userId = trusted.upstream ? claims.sub : `${issuerKey(trusted.issuer)}#${claims.sub}`
    const { grant, tokens } = await this.#d.grants.createAccessGrant({
      userId,
      clientId: client.clientId,
      scopes: decision.scopes,
      resource: decision.resource.resource
    })
    this.#d.auditor.emit('token_issued', { clientId: client.clientId, userId, grantId: grant.grantId, grantType: JWT_BEARER_GRANT })
    return tokens
  }

  /** The verified claims against this request: its client, its resource, the scopes to grant. */
  #decide (client: ClientRecord, { claims }: DecodedAssertion, request: { scope?: string | undefined, resource?: string | undefined }): { resource: ResolvedResource, scopes: string[] } {
    if (claims.iat === undefined) throw refused('"iat" is missing')
    if (typeof claims.client_id !== 'string') throw refused('"client_id" is missing or not a string')
    if (claims.client_id !== client.clientId) throw refused('it was issued to another client ("client_id")')
    const resource = this.#resource(claims.resource, request.resource)
    return { resource, scopes: this.#scopes(client, claims.scope, request.scope, resource) }
  }

  /** The ID-JAG's `resource` and the request's must agree; neither: the default resource (Okta omits the claim). */
  #resource (claim: unknown, requested: string | undefined): ResolvedResource {
    const { resources } = this.#d.config
    let asserted: ResolvedResource | undefined
    if (claim !== undefined) {
      if (typeof claim !== 'string') throw refused('"resource" must be a string')
      asserted = matchResource(claim, resources) ?? undefined
      if (asserted === undefined) throw refused('its "resource" is not served by this authorization server')
    }
    if (requested === undefined) return asserted ?? resources[0] as ResolvedResource
    const target = matchResource(requested, resources)
    if (target === null) throw new OAuthError('invalid_target', 'The resource is not served by this authorization server')
    if (asserted !== undefined && asserted !== target) throw new OAuthError('invalid_target', 'The resource is not the one the ID-JAG was issued for')
    return target
  }

  /**
   * What the client asked for (else what the IdP granted, else the defaults), within what the IdP
   * granted, the client's registered scope and the resource's scopes. Nothing left: invalid_scope.
   */
  #scopes (client: ClientRecord, claim: unknown, requested: string | undefined, resource: ResolvedResource): string[] {
    if (claim !== undefined && typeof claim !== 'string') throw refused('"scope" must be a string of space-separated scopes')
    const asserted = claim?.split(' ').filter(s => s !== '')
    let wanted: readonly string[] = asserted ?? this.#d.config.defaultScopes
    if (requested !== undefined && requested.trim() !== '') {
      const decision = decideScopes(requested, this.#d.config.scopes, [])
      if (!decision.ok) throw new OAuthError('invalid_scope', decision.description)
      wanted = decision.scopes
    }
    const scopes = wanted.filter(s => resource.scopes.includes(s) && clientMayHold(client, s) && (asserted === undefined || asserted.includes(s)))
    if (scopes.length === 0) {
      throw new OAuthError('invalid_scope', 'No scope is left: the request, the ID-JAG, the client\'s registration and the resource have none in common')
    }
    return scopes
  }
}
