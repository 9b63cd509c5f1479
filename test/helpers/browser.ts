/**
 * A tiny scripted browser for tests: it drives HTML login and consent pages with plain fetch.
 *
 * - Keeps cookies (a small RFC 6265 jar: Domain, Path, Max-Age/Expires, Secure are honoured).
 * - Follows redirects by hand (301/302/303 become GET; 307/308 keep method and body) until a
 *   redirect target matches `stopAt`; that URL is NOT requested but returned as `page.stoppedAt`.
 *   That is how a test catches the redirect to a client's redirect URI without a server there.
 * - Parses forms with regular expressions (good enough for server-rendered pages, not a real
 *   HTML parser): hidden and other inputs, checked checkboxes/radios, selects, textareas and
 *   the default submit button are submitted like a browser would.
 *
 * Usage:
 *
 *   import { Browser } from './helpers/browser.js'
 *
 *   const browser = new Browser()
 *   // One call: follow redirects, fill and submit each page's first form, stop at the callback.
 *   const done = await browser.drive(authorizationUrl, {
 *     stopAt: (url) => url.href.startsWith(redirectUri),
 *     fields: { login: 'alice', password: 'anything' } // only set on forms that have such a field
 *   })
 *   const callbackUrl = done.stoppedAt // URL with ?code=...&state=...
 *
 *   // Or step by step:
 *   const page = await browser.get(url, { stopAt })        // follows redirects
 *   const forms = page.forms()                              // parsed forms of that page
 *   const next = await browser.submit(page, { login: 'alice' }, { stopAt, form: 0, submitter: 'approve' })
 *
 * Every request has a timeout (default 10 s), and nothing is left running between calls.
 */

export type StopPredicate = (url: URL) => boolean

export interface NavigateOptions {
  /** Checked against every redirect target; when true, following stops there. */
  stopAt?: StopPredicate
  /** Default: the browser's `maxRedirects` (20). */
  maxRedirects?: number
}

export interface SubmitOptions extends NavigateOptions {
  /** Index of the form on the page. Default 0. */
  form?: number
  /**
   * Which submit button to press, by its name or its value. Default: the first named submit
   * button, if any (as a browser does on Enter).
   */
  submitter?: string
}

export interface DriveOptions extends NavigateOptions {
  stopAt: StopPredicate
  /**
   * What to fill in. A record sets only the fields a form actually has (so one record can serve
   * a login form and a consent form in turn). A function decides per form; returning undefined
   * submits the form as it is.
   */
  fields?: Record<string, string> | ((form: HtmlForm, page: Page) => Record<string, string> | undefined)
  /** Give up after this many forms. Default 10. */
  maxForms?: number
  /** Passed to `submit` for every form. */
  submitter?: string
}

export interface HtmlForm {
  action: URL
  method: 'GET' | 'POST'
  /** Successful controls in document order, as a browser would send them (without the button). */
  fields: Array<[string, string]>
  /** Names of every named control, including unchecked boxes and buttons. */
  names: Set<string>
  /** Named submit buttons in document order. */
  submitters: Array<{ name: string, value: string }>
}

export interface Page {
  /** The URL of the last response. */
  url: URL
  status: number
  headers: Headers
  /** The body of the last response ('' when following stopped at a redirect). */
  body: string
  /** The redirect target that matched `stopAt`; it was not requested. */
  stoppedAt?: URL
  /** Every URL requested for this navigation, in order. */
  history: URL[]
  /** The forms of the page. */
  forms(): HtmlForm[]
}

export interface BrowserOptions {
  /** Per-request timeout in milliseconds. Default 10000. */
  timeoutMs?: number
  /** Default 20. */
  maxRedirects?: number
  /** Extra headers for every request. */
  headers?: Record<string, string>
}

interface Cookie {
  name: string
  value: string
  domain: string
  hostOnly: boolean
  path: string
  secure: boolean
  /** Epoch ms; undefined for a session cookie. */
  expires?: number
}

const REDIRECTS = new Set([301, 302, 303, 307, 308])

/** A cookie jar following the parts of RFC 6265 that test servers rely on. */
export class CookieJar {
  readonly #cookies = new Map<string, Cookie>()

  /** Stores the Set-Cookie headers of a response to `url`. */
  store (url: URL, headers: Headers): void {
    for (const line of headers.getSetCookie()) this.#storeOne(url, line)
  }

  #storeOne (url: URL, line: string): void {
    const [pair = '', ...attributes] = line.split(';')
    const eq = pair.indexOf('=')
    if (eq <= 0) return
    const cookie: Cookie = {
      name: pair.slice(0, eq).trim(),
      value: pair.slice(eq + 1).trim(),
      domain: url.hostname,
      hostOnly: true,
      path: defaultPath(url.pathname),
      secure: false
    }
    let maxAge: number | undefined
    for (const attribute of attributes) {
      const at = attribute.indexOf('=')
      const key = (at === -1 ? attribute : attribute.slice(0, at)).trim().toLowerCase()
      const value = at === -1 ? '' : attribute.slice(at + 1).trim()
      if (key === 'domain' && value !== '') {
        const domain = value.replace(/^\./, '').toLowerCase()
        if (!domainMatches(url.hostname, domain)) return // a server cannot set cookies for others
        cookie.domain = domain
        cookie.hostOnly = false
      } else if (key === 'path' && value.startsWith('/')) {
        cookie.path = value
      } else if (key === 'secure') {
        cookie.secure = true
      } else if (key === 'max-age' && /^-?\d+$/.test(value)) {
        maxAge = Number(value)
      } else if (key === 'expires') {
        const time = Date.parse(value)
        if (!Number.isNaN(time)) cookie.expires = time
      }
    }
    if (maxAge !== undefined) cookie.expires = Date.now() + maxAge * 1000
    const key = `${cookie.domain};${cookie.path};${cookie.name}`
    if (cookie.expires !== undefined && cookie.expires <= Date.now()) this.#cookies.delete(key)
    else this.#cookies.set(key, cookie)
  }

  /** The cookies a request to `url` would carry, most specific path first. */
  cookiesFor (url: URL): Array<{ name: string, value: string }> {
    const now = Date.now()
    const matching: Cookie[] = []
    for (const [key, cookie] of this.#cookies) {
      if (cookie.expires !== undefined && cookie.expires <= now) {
        this.#cookies.delete(key)
        continue
      }
      const hostOk = cookie.hostOnly ? url.hostname === cookie.domain : domainMatches(url.hostname, cookie.domain)
      if (hostOk && pathMatches(url.pathname, cookie.path) && (!cookie.secure || url.protocol === 'https:')) matching.push(cookie)
    }
    matching.sort((a, b) => b.path.length - a.path.length)
    return matching.map(({ name, value }) => ({ name, value }))
  }

  /** The Cookie header value for `url`, or undefined when there is none. */
  header (url: URL): string | undefined {
    const cookies = this.cookiesFor(url)
    return cookies.length === 0 ? undefined : cookies.map(({ name, value }) => `${name}=${value}`).join('; ')
  }

  clear (): void {
    this.#cookies.clear()
  }
}

function defaultPath (pathname: string): string {
  const last = pathname.lastIndexOf('/')
  return last <= 0 ? '/' : pathname.slice(0, last)
}

function domainMatches (host: string, domain: string): boolean {
  return host === domain || (host.endsWith(`.${domain}`) && !/^[\d.]+$|^\[/.test(host))
}

function pathMatches (requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true
  if (!requestPath.startsWith(cookiePath)) return false
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/'
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' }

/** Decodes the HTML character references found in attribute values and text. */
export function decodeEntities (text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, ref: string) => {
    if (ref[0] === '#') {
      const code = ref[1] === 'x' || ref[1] === 'X' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10)
      return Number.isFinite(code) && code <= 0x10ffff ? String.fromCodePoint(code) : whole
    }
    return ENTITIES[ref.toLowerCase()] ?? whole
  })
}

function parseAttributes (source: string): Map<string, string> {
  const attributes = new Map<string, string>()
  const pattern = /([^\s"'<>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g
  for (const match of source.matchAll(pattern)) {
    const name = (match[1] as string).toLowerCase()
    if (!attributes.has(name)) attributes.set(name, decodeEntities(match[2] ?? match[3] ?? match[4] ?? ''))
  }
  return attributes
}

/** The forms of an HTML page, with their actions resolved against `base`. */
export function parseForms (html: string, base: URL): HtmlForm[] {
  const forms: HtmlForm[] = []
  for (const match of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form\s*>/gi)) {
    const attributes = parseAttributes(match[1] as string)
    const action = attributes.get('action')
    const form: HtmlForm = {
      action: new URL(action === undefined || action === '' ? base.href : action, base),
      method: attributes.get('method')?.toUpperCase() === 'POST' ? 'POST' : 'GET',
      fields: [],
      names: new Set(),
      submitters: []
    }
    // <input> is a void element; the others run to their closing tag.
    const controls = /<(?:(input)\b([^>]*)>|(button|select|textarea)\b([^>]*)>([\s\S]*?)<\/\3\s*>)/gi
    for (const control of (match[2] as string).matchAll(controls)) {
      const tag = (control[1] ?? control[3] as string).toLowerCase()
      const attrs = parseAttributes(control[2] ?? control[4] as string)
      const content = control[5] ?? ''
      const name = attrs.get('name')
      if (name === undefined || name === '') continue
      form.names.add(name)
      if (attrs.has('disabled')) continue
      const type = (attrs.get('type') ?? (tag === 'button' ? 'submit' : 'text')).toLowerCase()
      if (tag === 'button' || (tag === 'input' && (type === 'submit' || type === 'image' || type === 'button' || type === 'reset'))) {
        if (type === 'submit' || type === 'image') {
          const text = tag === 'button' ? decodeEntities(content.replace(/<[^>]*>/g, '').trim()) : ''
          form.submitters.push({ name, value: attrs.get('value') ?? text })
        }
        continue
      }
      if (tag === 'textarea') {
        form.fields.push([name, decodeEntities(content)])
      } else if (tag === 'select') {
        const options = [...content.matchAll(/<option\b([^>]*)>([^<]*)/gi)]
        const chosen = options.find((option) => parseAttributes(option[1] as string).has('selected')) ?? options[0]
        if (chosen !== undefined) {
          form.fields.push([name, parseAttributes(chosen[1] as string).get('value') ?? decodeEntities((chosen[2] as string).trim())])
        }
      } else if (type === 'checkbox' || type === 'radio') {
        if (attrs.has('checked')) form.fields.push([name, attrs.get('value') ?? 'on'])
      } else if (type !== 'file') {
        form.fields.push([name, attrs.get('value') ?? ''])
      }
    }
    forms.push(form)
  }
  return forms
}

function excerpt (html: string): string {
  return html.replace(/<(script|style)\b[\s\S]*?<\/\1>/gi, ' ').replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200)
}

export class Browser {
  readonly cookies = new CookieJar()
  readonly #timeoutMs: number
  readonly #maxRedirects: number
  readonly #headers: Record<string, string>

  constructor (opts: BrowserOptions = {}) {
    this.#timeoutMs = opts.timeoutMs ?? 10_000
    this.#maxRedirects = opts.maxRedirects ?? 20
    this.#headers = { ...opts.headers }
  }

  /** GET `url`, following redirects. */
  async get (url: string | URL, opts: NavigateOptions = {}): Promise<Page> {
    return await this.request('GET', url, undefined, opts)
  }

  /** POST a form-encoded body to `url`, following redirects. */
  async post (url: string | URL, body: URLSearchParams | Record<string, string>, opts: NavigateOptions = {}): Promise<Page> {
    return await this.request('POST', url, new URLSearchParams(body), opts)
  }

  /** Submits a form of `page` with its own values overridden or extended by `fields`. */
  async submit (page: Page, fields: Record<string, string> = {}, opts: SubmitOptions = {}): Promise<Page> {
    const index = opts.form ?? 0
    const form = page.forms()[index]
    if (form === undefined) {
      throw new Error(`browser: no form #${index} on ${page.url.href} (HTTP ${page.status}): ${excerpt(page.body)}`)
    }
    const data = new URLSearchParams(form.fields)
    for (const [name, value] of Object.entries(fields)) data.set(name, value)
    const button = opts.submitter === undefined
      ? form.submitters[0]
      : form.submitters.find((b) => b.name === opts.submitter || b.value === opts.submitter)
    if (opts.submitter !== undefined && button === undefined) {
      throw new Error(`browser: no submit button "${opts.submitter}" in form #${index} on ${page.url.href}`)
    }
    if (button !== undefined) data.append(button.name, button.value)
    if (form.method === 'POST') return await this.request('POST', form.action, data, opts)
    const target = new URL(form.action)
    target.search = data.toString()
    return await this.request('GET', target, undefined, opts)
  }

  /**
   * Starts at `url` and submits the first form of every page it lands on until a redirect
   * matches `stopAt`. Returns that last page; `page.stoppedAt` is the matched URL.
   */
  async drive (url: string | URL, opts: DriveOptions): Promise<Page> {
    const maxForms = opts.maxForms ?? 10
    const navigate: SubmitOptions = { stopAt: opts.stopAt }
    if (opts.maxRedirects !== undefined) navigate.maxRedirects = opts.maxRedirects
    if (opts.submitter !== undefined) navigate.submitter = opts.submitter
    let page = await this.get(url, navigate)
    for (let submitted = 0; page.stoppedAt === undefined; submitted++) {
      if (submitted >= maxForms) {
        throw new Error(`browser: still no matching redirect after ${maxForms} forms; at ${page.url.href} (HTTP ${page.status})`)
      }
      const form = page.forms()[0]
      if (form === undefined) {
        throw new Error(`browser: no form and no matching redirect at ${page.url.href} (HTTP ${page.status}): ${excerpt(page.body)}`)
      }
      let fields: Record<string, string> | undefined
      if (typeof opts.fields === 'function') {
        fields = opts.fields(form, page)
      } else if (opts.fields !== undefined) {
        fields = Object.fromEntries(Object.entries(opts.fields).filter(([name]) => form.names.has(name)))
      }
      page = await this.submit(page, fields, navigate)
    }
    return page
  }

  /** One navigation: the request and its redirects. */
  async request (method: string, url: string | URL, body: URLSearchParams | undefined, opts: NavigateOptions = {}): Promise<Page> {
    const maxRedirects = opts.maxRedirects ?? this.#maxRedirects
    const history: URL[] = []
    let current = new URL(url)
    for (let hops = 0; ; hops++) {
      if (current.protocol !== 'http:' && current.protocol !== 'https:') {
        throw new Error(`browser: cannot request ${current.protocol} URLs; add a stopAt that matches ${current.href}`)
      }
      history.push(current)
      const headers: Record<string, string> = { accept: 'text/html,application/xhtml+xml,*/*;q=0.8', ...this.#headers }
      const cookie = this.cookies.header(current)
      if (cookie !== undefined) headers.cookie = cookie
      if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
      const res = await fetch(current, {
        method,
        headers,
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.#timeoutMs)
      })
      this.cookies.store(current, res.headers)
      const location = res.headers.get('location')
      if (REDIRECTS.has(res.status) && location !== null) {
        await res.body?.cancel()
        const next = new URL(location, current)
        if (opts.stopAt?.(next) === true) {
          return makePage(current, res, '', history, next)
        }
        if (hops >= maxRedirects) throw new Error(`browser: more than ${maxRedirects} redirects from ${history[0]?.href}`)
        if (res.status !== 307 && res.status !== 308) {
          method = 'GET'
          body = undefined
        }
        current = next
        continue
      }
      return makePage(current, res, await res.text(), history)
    }
  }
}

function makePage (url: URL, res: Response, body: string, history: URL[], stoppedAt?: URL): Page {
  let forms: HtmlForm[] | undefined
  const page: Page = {
    url,
    status: res.status,
    headers: res.headers,
    body,
    history,
    forms: () => (forms ??= parseForms(body, url))
  }
  if (stoppedAt !== undefined) page.stoppedAt = stoppedAt
  return page
}
