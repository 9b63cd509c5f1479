import { isLoopbackRedirect } from '../oauth/redirect.js'
import { follow, jsonObject, quote, redirectTarget, send, type Answer, type HttpOptions, type Probe } from './http.js'

/**
 * `doctor <mcp-url>`: the discovery an MCP client runs before it logs a user in (MCP 2025-11-25
 * authorization), done from outside, judging each step by what clients do with it.
 */

export type Status = 'pass' | 'warn' | 'fail' | 'skip'

export interface Check {
  id: string
  status: Status
  /** What was seen, and why it is judged so. */
  detail: string
  /** For warn and fail: what clients do about it, which behaviour breaks. */
  impact?: string
}

export interface DoctorOptions extends Omit<HttpOptions, 'deadline'> {
  /** A browser origin whose CORS access is checked. */
  origin?: string
}

/** How many request timeouts the whole run may take (it sends about a dozen requests). */
export const BUDGET_TIMEOUTS = 6

const PROTOCOL_VERSION = '2025-11-25'
const INITIALIZE = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'fastify-mcp-oauth-doctor', version: '1' } }
})
/** What an MCP client's first request carries; a preflight asks for the non-safelisted ones. */
const MCP_HEADERS = { accept: 'application/json, text/event-stream', 'content-type': 'application/json', 'mcp-protocol-version': PROTOCOL_VERSION }
const PREFLIGHT_HEADERS = ['authorization', 'content-type', 'mcp-protocol-version']
/** Clock skew that starts to matter for iat/exp checks, and skew that breaks them. */
const SKEW_WARN_S = 30
const SKEW_FAIL_S = 300
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']

const SDK_STOPS = 'the MCP SDK stops discovery here and the user cannot log in'

interface Located { id: string, url: URL, probe: Probe, document?: Record<string, unknown>, problem?: string }

export async function diagnose (mcp: URL, opts: DoctorOptions): Promise<Check[]> {
  return new Diagnosis(mcp, { ...opts, deadline: Date.now() + BUDGET_TIMEOUTS * opts.timeoutMs }).run()
}

class Diagnosis {
  readonly #mcp: URL
  readonly #http: HttpOptions
  readonly #origin: string | undefined
  readonly #checks: Check[] = []
  /** Every URL a client would use, for the https check: [what it is, the URL]. */
  readonly #urls: Array<[string, string]> = []

  constructor (mcp: URL, opts: DoctorOptions & { deadline: number }) {
    this.#mcp = mcp
    this.#http = opts
    this.#origin = opts.origin
  }

  async run (): Promise<Check[]> {
    this.#urls.push(['MCP endpoint', this.#mcp.href])
    const started = Date.now()
    const challenge = await follow({ method: 'POST', url: this.#mcp, headers: this.#withOrigin(MCP_HEADERS), body: INITIALIZE }, this.#http)
    if (!challenge.ok) {
      this.#add('challenge', 'fail', `POST ${this.#mcp.href}: ${challenge.problem}`, 'clients cannot reach the MCP endpoint at all')
      this.#add('discovery', 'skip', 'nothing else can be checked without an answer from the MCP endpoint')
      return this.#checks
    }
    const answer = challenge.answer
    const header = this.#challenge(answer)
    const prm = await this.#protectedResource(header.resourceMetadata)
    if (prm !== undefined) await this.#authorizationServer(prm, answer)
    else this.#add('discovery', 'skip', 'authorization server checks need protected resource metadata')
    this.#clock(answer, started)
    this.#https()
    return this.#checks
  }

  #add (id: string, status: Status, detail: string, impact?: string, answer?: Answer): void {
    let s = status
    let d = detail
    if (answer !== undefined && answer.redirects.length > 0) {
      d = `redirected to ${answer.url.href}; ${d}`
      if (s === 'pass') {
        s = 'warn'
        impact = 'clients that follow same-origin redirects get there (the MCP SDK v2 does), others and CORS preflights do not: publish the final URL'
      }
    }
    this.#checks.push(impact === undefined || s === 'pass' || s === 'skip' ? { id, status: s, detail: d } : { id, status: s, detail: d, impact })
  }

  #withOrigin (headers: Record<string, string>): Record<string, string> {
    return this.#origin === undefined ? headers : { ...headers, origin: this.#origin }
  }

  #get (url: URL): Promise<Probe> {
    return follow({ method: 'GET', url, headers: this.#withOrigin({ accept: 'application/json', 'mcp-protocol-version': PROTOCOL_VERSION }) }, this.#http)
  }

  /** The unauthenticated request and its WWW-Authenticate challenge. */
  #challenge (answer: Answer): { resourceMetadata?: URL } {
    const where = `POST ${answer.url.href} without a token`
    const status = answer.status
    if (status === 401) this.#add('challenge', 'pass', `${where}: 401`, undefined, answer)
    else if (status >= 300 && status < 400) {
      this.#add('challenge', 'fail', `${where}: ${status} to ${quote(String(answer.headers.location ?? ''))}, not followed (another origin, or the method would change)`,
        'clients neither follow it with their POST nor start a login', answer)
    } else if (status >= 200 && status < 300) {
      this.#add('challenge', 'fail', `${where}: ${status}: the endpoint is not protected`, 'clients never log in; every caller gets in', answer)
    } else {
      this.#add('challenge', 'fail', `${where}: ${status}, expected 401`,
        status === 403 ? 'a 403 without a token is not a login prompt: clients report an error instead of discovering' : 'clients see an error, not a login prompt', answer)
    }
    const raw = answer.headers['www-authenticate']
    if (raw === undefined) {
      this.#add('www-authenticate', 'warn', 'no WWW-Authenticate header', 'clients cannot take resource_metadata or scope from the challenge and fall back to the well-known locations')
      return {}
    }
    const params = bearerParams(raw)
    if (params === null) {
      this.#add('www-authenticate', 'fail', `no Bearer challenge in ${quote(raw)}`, 'clients do not recognise an OAuth bearer challenge (RFC 6750)')
      return {}
    }
    const missing: string[] = []
    let resourceMetadata: URL | undefined
    const rm = params.get('resource_metadata')
    if (rm === undefined) missing.push('no resource_metadata: clients fall back to the well-known locations (RFC 9728 §5.1)')
    else {
      try {
        resourceMetadata = new URL(rm)
        this.#urls.push(['resource_metadata', rm])
      } catch {
        this.#add('www-authenticate', 'fail', `resource_metadata ${quote(rm)} is not an absolute URL`, SDK_STOPS)
        return {}
      }
    }
    const scope = params.get('scope')
    if (scope === undefined) missing.push('no scope: clients ask for every scope in scopes_supported instead')
    const seen = `Bearer${rm === undefined ? '' : ` resource_metadata=${quote(rm)}`}${scope === undefined ? '' : ` scope=${quote(scope)}`}`
    if (missing.length === 0) this.#add('www-authenticate', 'pass', seen)
    else this.#add('www-authenticate', 'warn', seen, missing.join('; '))
    return resourceMetadata === undefined ? {} : { resourceMetadata }
  }

  /** RFC 9728 metadata in the order clients look: the challenge's URL, path-inserted, root. */
  async #protectedResource (fromHeader: URL | undefined): Promise<Located | undefined> {
    const path = this.#mcp.pathname.replace(/\/$/, '')
    const locations: Array<[string, URL]> = []
    if (fromHeader !== undefined) locations.push(['prm-header', fromHeader])
    if (path !== '') locations.push(['prm-path', new URL(`/.well-known/oauth-protected-resource${path}`, this.#mcp)])
    locations.push(['prm-root', new URL('/.well-known/oauth-protected-resource', this.#mcp)])
    const found: Located[] = []
    for (const [id, url] of locations) {
      const same = found.find(f => f.url.href === url.href)
      found.push(same === undefined ? await this.#locate(id, url, prmProblem) : { ...same, id })
    }
    const usable = found.find(f => f.document !== undefined)
    const root = found.find(f => f.id === 'prm-root') as Located
    const rootServes = root.document !== undefined && resourceFits(String(root.document.resource), this.#mcp) !== 'other'
    for (const f of found) {
      const via = f.probe.ok ? f.probe.answer : undefined
      const what = `GET ${f.url.href}`
      if (f.document !== undefined) {
        const used = f === usable ? ' (used)' : f.document === usable?.document ? ` (the document of ${usable.id})` : ''
        this.#add(f.id, 'pass', `${what}: 200, resource ${quote(String(f.document.resource))}${used}`, undefined, via)
      } else if (f.id === 'prm-header') {
        this.#add(f.id, 'fail', `${what} (named by the challenge): ${f.problem}`, `clients use the challenge's URL when it is there: ${SDK_STOPS}`, via)
      } else if (f.id === 'prm-path') {
        if (rootServes) {
          this.#add(f.id, 'warn', `${what}: ${f.problem}`, 'clients that probe the well-known locations fall back to the root document, which names this resource', via)
        } else {
          this.#add(f.id, 'fail', `${what}: ${f.problem}`, 'clients without the challenge\'s URL look here first (RFC 9728 §3.1, MCP 2025-11-25) and then at the root, which does not describe this resource', via)
        }
      } else if (usable !== undefined) {
        this.#add(f.id, 'pass', `${what}: ${f.problem} (not needed: clients find ${usable.id === 'prm-header' ? 'the challenge\'s URL' : 'the path-inserted document'} first)`)
      } else {
        this.#add(f.id, 'fail', `${what}: ${f.problem}`, `no protected resource metadata anywhere: ${SDK_STOPS}`, via)
      }
    }
    if (usable === undefined) return undefined
    this.#resource(usable.document as Record<string, unknown>)
    return usable
  }

  async #locate (id: string, url: URL, problemOf: (doc: Record<string, unknown>) => string | undefined): Promise<Located> {
    const probe = await this.#get(url)
    if (!probe.ok) return { id, url, probe, problem: probe.problem }
    const { answer } = probe
    if (answer.status !== 200) {
      const target = redirectTarget(answer)
      const why = answer.status === 404 ? ' (not found)' : target !== null ? ` to ${quote(target.href)}, not followed (clients follow redirects within the origin only)` : ''
      return { id, url, probe, problem: `${answer.status}${why}` }
    }
    const json = jsonObject(answer)
    if (!json.ok) return { id, url, probe, problem: json.problem }
    const problem = problemOf(json.value)
    return problem === undefined ? { id, url, probe, document: json.value } : { id, url, probe, problem }
  }

  #resource (doc: Record<string, unknown>): void {
    const resource = String(doc.resource)
    this.#urls.push(['resource', resource])
    const fits = resourceFits(resource, this.#mcp)
    if (fits === 'identical') this.#add('resource', 'pass', `${quote(resource)} is the MCP endpoint's URL`)
    else if (fits === 'parent') {
      this.#add('resource', 'warn', `${quote(resource)} is not identical to ${quote(this.#mcp.href)} (RFC 9728 §3.3)`,
        'the MCP SDKs accept a parent of the endpoint; strict RFC 9728 clients refuse the metadata, and tokens name the parent')
    } else {
      this.#add('resource', 'fail', `${quote(resource)} does not name ${quote(this.#mcp.href)}`,
        'the MCP SDK refuses the metadata (resource does not match the server URL); other clients ask for tokens for the wrong resource and the server refuses them')
    }
  }

  /** RFC 8414 / OpenID metadata of the first authorization server, in the MCP client order. */
  async #authorizationServer (prm: Located, challenge: Answer): Promise<void> {
    const servers = (prm.document as Record<string, unknown>).authorization_servers as string[]
    const first = servers[0] as string
    let as: URL
    try {
      as = new URL(first)
    } catch {
      this.#add('as-metadata', 'fail', `authorization_servers[0] ${quote(first)} is not an absolute URL`, SDK_STOPS)
      return
    }
    this.#urls.push(['authorization server', first])
    const more = servers.length > 1 ? ` (the first of ${servers.length})` : ''
    const path = as.pathname.replace(/\/$/, '')
    const locations: Array<[string, URL]> = path === ''
      ? [['as-oauth', new URL('/.well-known/oauth-authorization-server', as)], ['as-oidc', new URL('/.well-known/openid-configuration', as)]]
      : [['as-oauth', new URL(`/.well-known/oauth-authorization-server${path}`, as)],
          ['as-oidc', new URL(`/.well-known/openid-configuration${path}`, as)],
          ['as-oidc-append', new URL(`${path}/.well-known/openid-configuration`, as)]]
    let used: Located | undefined
    for (const [id, url] of locations) {
      const what = `GET ${url.href}`
      if (used !== undefined) {
        this.#add(id, 'skip', `${what} not needed: clients stop at ${used.id}`)
        continue
      }
      const found = await this.#locate(id, url, asProblem)
      const via = found.probe.ok ? found.probe.answer : undefined
      if (found.document !== undefined) {
        used = found
        this.#add(id, 'pass', `${what}: 200, issuer ${quote(String(found.document.issuer))} (used${more})`, undefined, via)
      } else if (via !== undefined && (via.status === 404 || via.status === 502 || (via.status >= 400 && via.status < 500))) {
        this.#add(id, 'pass', `${what}: ${found.problem}: clients go on to the next location`, undefined, via)
      } else {
        this.#add(id, 'fail', `${what}: ${found.problem}`, `clients stop at the first location that does not answer with a 4xx: ${SDK_STOPS}`, via)
        break
      }
    }
    await this.#legacyRoot(locations.map(([, url]) => url.href))
    if (used === undefined) {
      this.#add('as-metadata', 'fail', `no authorization server metadata for ${quote(first)}`, SDK_STOPS)
      return
    }
    const metadata = used.document as Record<string, unknown>
    this.#issuer(first, String(metadata.issuer))
    this.#pkce(metadata)
    this.#registration(metadata)
    this.#issParameter(metadata)
    await this.#jwks(metadata)
    await this.#cors(challenge, [prm, used], metadata)
  }

  /** Clients of the 2025-03-26 revision skip protected resource metadata and look at the MCP origin's root. */
  async #legacyRoot (tried: string[]): Promise<void> {
    const url = new URL('/.well-known/oauth-authorization-server', this.#mcp)
    if (tried.includes(url.href)) {
      this.#add('as-root', 'pass', `${url.href} is the issuer's own RFC 8414 location (checked above)`)
      return
    }
    const found = await this.#locate('as-root', url, asProblem)
    const via = found.probe.ok ? found.probe.answer : undefined
    if (found.document !== undefined) this.#add('as-root', 'pass', `GET ${url.href}: 200, issuer ${quote(String(found.document.issuer))}`, undefined, via)
    else {
      this.#add('as-root', 'warn', `GET ${url.href}: ${found.problem}`,
        'clients of the 2025-03-26 revision, which skip protected resource metadata, find nothing at the MCP server\'s origin and guess /authorize, /token and /register', via)
    }
  }

  #issuer (expected: string, issuer: string): void {
    this.#urls.push(['issuer', issuer])
    if (issuer === expected) this.#add('issuer', 'pass', `metadata issuer ${quote(issuer)} is the authorization_servers entry, exactly`)
    else if (expected.endsWith('/') && issuer === expected.slice(0, -1)) {
      this.#add('issuer', 'warn', `metadata issuer ${quote(issuer)} lacks the trailing slash of authorization_servers ${quote(expected)}`,
        'the MCP SDK v2 tolerates this one difference; strict RFC 8414 clients (oauth4webapi, openid-client) refuse the metadata')
    } else {
      this.#add('issuer', 'fail', `metadata issuer ${quote(issuer)} is not the authorization_servers entry ${quote(expected)} (RFC 8414 §3.3: identical strings)`,
        'the MCP SDK v2 stops with IssuerMismatchError and strict clients refuse the metadata; the RFC 9207 iss check compares against this value')
    }
  }

  #pkce (metadata: Record<string, unknown>): void {
    const methods = metadata.code_challenge_methods_supported
    if (!Array.isArray(methods)) {
      this.#add('pkce', 'fail', 'no code_challenge_methods_supported', 'MCP clients must refuse to proceed when PKCE support is not advertised (MCP 2025-11-25)')
    } else if (!methods.includes('S256')) {
      this.#add('pkce', 'fail', `code_challenge_methods_supported ${quote(JSON.stringify(methods))} lacks S256`, 'clients use S256 only and refuse this server')
    } else if (methods.includes('plain')) {
      this.#add('pkce', 'warn', 'S256 and plain offered', 'a downgraded client may send plain, which protects nothing (OAuth 2.1 wants S256)')
    } else this.#add('pkce', 'pass', 'code_challenge_methods_supported has S256')
  }

  #registration (metadata: Record<string, unknown>): void {
    const cimd = metadata.client_id_metadata_document_supported === true
    const dcr = typeof metadata.registration_endpoint === 'string'
    if (dcr) this.#urls.push(['registration_endpoint', metadata.registration_endpoint as string])
    const ways = [cimd ? 'client ID metadata documents' : '', dcr ? 'dynamic registration' : ''].filter(w => w !== '')
    if (ways.length > 0) this.#add('registration', 'pass', `clients can register: ${ways.join(' and ')}`)
    else {
      this.#add('registration', 'warn', 'neither client_id_metadata_document_supported nor registration_endpoint',
        'only clients with a pre-registered client id get in; most MCP clients have none and stop')
    }
  }

  #issParameter (metadata: Record<string, unknown>): void {
    if (metadata.authorization_response_iss_parameter_supported === true) this.#add('iss-parameter', 'pass', 'authorization_response_iss_parameter_supported: true (RFC 9207)')
    else {
      this.#add('iss-parameter', 'warn', 'authorization_response_iss_parameter_supported is not true',
        'clients cannot tell which server sent an authorization response (mix-up attacks, RFC 9207)')
    }
  }

  async #jwks (metadata: Record<string, unknown>): Promise<void> {
    const uri = metadata.jwks_uri
    if (uri === undefined) {
      this.#add('jwks', 'skip', 'no jwks_uri advertised (opaque access tokens)')
      return
    }
    let url: URL
    try {
      url = new URL(String(uri))
    } catch {
      this.#add('jwks', 'fail', `jwks_uri ${quote(String(uri))} is not an absolute URL`, 'resource servers cannot verify JWT access tokens')
      return
    }
    this.#urls.push(['jwks_uri', url.href])
    const found = await this.#locate('jwks', url, jwksProblem)
    const via = found.probe.ok ? found.probe.answer : undefined
    if (found.document === undefined) {
      const leak = found.problem?.startsWith('publishes private') === true
      this.#add('jwks', 'fail', `GET ${url.href}: ${found.problem}`,
        leak ? 'anyone can sign tokens this server accepts: rotate the keys now' : 'resource servers cannot verify JWT access tokens', via)
    } else {
      this.#add('jwks', 'pass', `GET ${url.href}: ${(found.document.keys as unknown[]).length} public key(s)`, undefined, via)
    }
  }

  /** What a browser-based client needs: preflights pass and every answer it reads carries the origin. */
  async #cors (challenge: Answer, documents: Located[], doc: Record<string, unknown>): Promise<void> {
    const origin = this.#origin
    if (origin === undefined) {
      this.#add('cors', 'skip', 'no --origin given: browser-based clients not checked')
      return
    }
    await this.#preflight('cors-mcp', this.#mcp, PREFLIGHT_HEADERS)
    const allowed = allowsOrigin(challenge, origin)
    if (allowed !== true) this.#add('cors-challenge', 'fail', `the 401 ${allowed}`, 'the browser hides the 401 from the client, which cannot start a login')
    else {
      const exposed = headerList(challenge.headers['access-control-expose-headers'])
      if (exposed.includes('www-authenticate') || exposed.includes('*')) this.#add('cors-challenge', 'pass', `the 401 allows ${origin} and exposes WWW-Authenticate`)
      else {
        this.#add('cors-challenge', 'warn', 'the 401 does not expose WWW-Authenticate (Access-Control-Expose-Headers)',
          'browser clients cannot read the challenge and fall back to the well-known locations')
      }
    }
    for (const [id, found] of ['cors-prm', 'cors-metadata'].map((id, i) => [id, documents[i] as Located] as const)) {
      const ok = allowsOrigin((found.probe as { answer: Answer }).answer, origin)
      if (ok === true) this.#add(id, 'pass', `${found.url.href} allows ${origin}`)
      else this.#add(id, 'fail', `${found.url.href} ${ok}`, 'browser clients cannot read the document and stop discovery')
    }
    const token = typeof doc.token_endpoint === 'string' ? safeUrl(doc.token_endpoint) : undefined
    if (token !== undefined) {
      // A form POST is a simple request: no preflight, but the answer must carry the origin.
      const probe = await send({ method: 'POST', url: token, headers: { origin, 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=authorization_code' }, this.#http)
      if (!probe.ok) this.#add('cors-token', 'fail', `POST ${token.href}: ${probe.problem}`, 'browser clients cannot redeem a code')
      else {
        const ok = allowsOrigin(probe.answer, origin)
        if (ok === true) this.#add('cors-token', 'pass', `POST ${token.href} (no code): ${probe.answer.status}, allows ${origin}`)
        else this.#add('cors-token', 'fail', `POST ${token.href} (no code): ${probe.answer.status}, ${ok}`, 'browser clients cannot read the token response')
      }
    }
    const register = typeof doc.registration_endpoint === 'string' ? safeUrl(doc.registration_endpoint) : undefined
    if (register !== undefined) await this.#preflight('cors-register', register, ['content-type'])
  }

  async #preflight (id: string, url: URL, headers: string[]): Promise<void> {
    const origin = this.#origin as string
    const probe = await send({
      method: 'OPTIONS',
      url,
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': headers.join(', ') }
    }, this.#http)
    const what = `preflight for POST ${url.href}`
    const breaks = 'the browser sends no request after a failed preflight: browser clients cannot use this endpoint'
    if (!probe.ok) {
      this.#add(id, 'fail', `${what}: ${probe.problem}`, breaks)
      return
    }
    const answer = probe.answer
    if (answer.status < 200 || answer.status > 299) {
      this.#add(id, 'fail', `${what}: ${answer.status} (a preflight needs a 2xx)`, breaks)
      return
    }
    const ok = allowsOrigin(answer, origin)
    if (ok !== true) {
      this.#add(id, 'fail', `${what}: ${ok}`, breaks)
      return
    }
    const listed = headerList(answer.headers['access-control-allow-headers'])
    // "*" allows every header but Authorization (Fetch standard), and nothing with credentials.
    const wildcard = listed.includes('*') && answer.headers['access-control-allow-credentials'] !== 'true'
    const refused = headers.filter(h => !listed.includes(h) && !(wildcard && h !== 'authorization'))
    if (refused.length > 0) this.#add(id, 'fail', `${what}: headers not allowed: ${refused.join(', ')}`, breaks)
    else this.#add(id, 'pass', `${what}: ${answer.status}, allows ${origin} with ${headers.join(', ')}`)
  }

  /** The server's clock, from the Date header of the first answer. */
  #clock (answer: Answer, sentAt: number): void {
    const date = Date.parse(String(answer.headers.date ?? ''))
    if (Number.isNaN(date)) {
      this.#add('clock', 'warn', 'no usable Date header', 'clock skew cannot be judged from here')
      return
    }
    // Date has whole seconds: compare with the middle of the exchange, and forgive the rounding.
    const skew = Math.round((date - (sentAt + Date.now()) / 2) / 1000)
    const detail = `the server's clock is ${Math.abs(skew)} s ${skew < 0 ? 'behind' : 'ahead of'} this machine's`
    const impact = 'JWTs (ID tokens from the identity provider, client assertions, JWT access tokens) are checked against iat/exp: a wrong clock refuses fresh ones or accepts stale ones'
    if (Math.abs(skew) <= SKEW_WARN_S) this.#add('clock', 'pass', detail)
    else this.#add('clock', Math.abs(skew) <= SKEW_FAIL_S ? 'warn' : 'fail', detail, impact)
  }

  /** MCP 2025-11-25, Communication Security: https for every endpoint, loopback excepted. */
  #https (): void {
    const insecure = this.#urls.filter(([, url]) => !url.startsWith('https:') && !isLoopbackRedirect(url))
    if (insecure.length === 0) {
      this.#add('https', 'pass', `all ${this.#urls.length} URLs are https (or http on loopback)`)
      return
    }
    const behindTls = this.#urls.some(([what, url]) => (what === 'issuer' || what === 'authorization server') && url.startsWith('https:'))
    this.#add('https', 'fail', `not https: ${insecure.map(([what, url]) => `${what} ${quote(url, 80)}`).join(', ')}` +
      (behindTls ? ' (TLS ends at a proxy and the application builds its URLs from what it sees? set the public https URL)' : ''),
    'MCP requires https for every authorization server endpoint; the MCP SDK v2 refuses an http token endpoint and strict clients refuse http metadata')
  }
}

/** The parameters of the Bearer challenge in a WWW-Authenticate value (RFC 9110 §11.6.1), or null. */
export function bearerParams (header: string): Map<string, string> | null {
  const start = /(?:^|,)\s*Bearer(?:\s+|$)/i.exec(header)
  if (start === null) return null
  const params = new Map<string, string>()
  const pattern = /\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))\s*(?:,|$)/y
  pattern.lastIndex = start.index + start[0].length
  for (let m = pattern.exec(header); m !== null; m = pattern.exec(header)) {
    const name = (m[1] as string).toLowerCase()
    if (!params.has(name)) params.set(name, m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3] as string)
  }
  return params
}

/**
 * How the metadata's resource relates to the endpoint: the same string, a parent the MCP SDKs
 * accept (same origin, a path prefix on segment boundaries), or another resource.
 */
export function resourceFits (resource: string, mcp: URL): 'identical' | 'parent' | 'other' {
  if (resource === mcp.href) return 'identical'
  const r = safeUrl(resource)
  if (r === undefined || r.origin !== mcp.origin || r.pathname.length > mcp.pathname.length) return 'other'
  const slash = (p: string) => p.endsWith('/') ? p : p + '/'
  return slash(mcp.pathname).startsWith(slash(r.pathname)) ? 'parent' : 'other'
}

function safeUrl (value: string): URL | undefined {
  try {
    return new URL(value)
  } catch {
    return undefined
  }
}

function prmProblem (doc: Record<string, unknown>): string | undefined {
  if (typeof doc.resource !== 'string') return 'no resource in the document'
  const servers = doc.authorization_servers
  if (!Array.isArray(servers) || servers.length === 0 || !servers.every(s => typeof s === 'string')) return 'no authorization_servers (a non-empty list of URLs) in the document'
  return undefined
}

function asProblem (doc: Record<string, unknown>): string | undefined {
  const missing = ['issuer', 'authorization_endpoint', 'token_endpoint'].filter(k => typeof doc[k] !== 'string')
  return missing.length === 0 ? undefined : `metadata without ${missing.join(', ')}`
}

function jwksProblem (doc: Record<string, unknown>): string | undefined {
  const keys = doc.keys
  if (!Array.isArray(keys) || keys.length === 0) return 'no keys in the JWK set'
  if (!keys.every(k => k !== null && typeof k === 'object' && typeof (k as Record<string, unknown>).kty === 'string')) return 'a key without kty'
  const leaking = keys.filter(k => PRIVATE_JWK_MEMBERS.some(m => m in (k as Record<string, unknown>)))
  if (leaking.length > 0) return `publishes private key material (${leaking.length} key(s) with ${PRIVATE_JWK_MEMBERS.join('/')} members)`
  return undefined
}

/** true, or what is wrong with the answer's Access-Control-Allow-Origin for this origin. */
function allowsOrigin (answer: Answer, origin: string): true | string {
  const allowed = answer.headers['access-control-allow-origin']
  if (allowed === undefined) return 'has no Access-Control-Allow-Origin'
  if (allowed === origin || allowed === '*') return true
  return `allows ${quote(String(allowed))}, not ${origin}`
}

function headerList (value: string | string[] | undefined): string[] {
  return (Array.isArray(value) ? value.join(',') : value ?? '').split(',').map(v => v.trim().toLowerCase()).filter(v => v !== '')
}
