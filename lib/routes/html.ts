import { createHash } from 'node:crypto'
import type { FastifyReply } from 'fastify'
import { isLoopbackRedirect } from '../oauth/redirect.js'
import type { ResolvedConfig } from '../options/index.js'

/** Escape for HTML text and double-quoted attribute values. */
export function escapeHtml (value: string): string {
  return value.replace(/[&<>"'`]/g, c => `&#${c.charCodeAt(0)};`)
}

function styles (accent: string): string {
  return `body{font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f4f5f7;color:#1c1e21;margin:0}
main{max-width:30rem;margin:4rem auto;background:#fff;border-radius:12px;padding:2rem;box-shadow:0 2px 12px rgba(0,0,0,.08)}
h1{font-size:1.35rem;margin:0 0 1rem}.logo{max-height:48px;margin-bottom:1rem}
.muted{color:#5f6673;font-size:.9rem}.warn{background:#fff4e5;border:1px solid #f0b35b;border-radius:8px;padding:.75rem;margin:1rem 0}
ul{padding-left:1.2rem}code{background:#f0f1f3;padding:.1rem .3rem;border-radius:4px;word-break:break-all}
a{color:${accent}}
.buttons{display:flex;flex-direction:row-reverse;gap:.75rem;margin-top:1.5rem}button{flex:1;font:inherit;padding:.7rem;border-radius:8px;border:1px solid #c8ccd2;background:#fff;cursor:pointer}
button.primary{background:${accent};border-color:${accent};color:#fff}`
}

export interface PageStyle {
  css: string
  csp: string
}

/**
 * The page's CSS and a CSP that allows exactly that stylesheet and nothing else to run or load.
 * No form-action: browsers apply it to the redirects that follow a submission, and approving sends
 * the browser on to the identity provider (or back to the client on denial), origins that are not
 * known when the page is rendered. Nothing on the page can inject a form, so it would add little.
 */
export function pageStyle (config: ResolvedConfig): PageStyle {
  const css = styles(config.consent.accentColor)
  const hash = createHash('sha256').update(css).digest('base64')
  const img = config.consent.logoUrl === undefined ? "'none'" : new URL(config.consent.logoUrl).origin
  return {
    css,
    csp: `default-src 'none'; style-src 'sha256-${hash}'; img-src ${img}; ` +
      "frame-ancestors 'none'; base-uri 'none'"
  }
}

function layout (style: PageStyle, config: ResolvedConfig, title: string, body: string): string {
  const logo = config.consent.logoUrl === undefined ? '' : `<img class="logo" alt="" src="${escapeHtml(config.consent.logoUrl)}">`
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer"><title>${escapeHtml(title)}</title><style>${style.css}</style></head>
<body><main>${logo}${body}</main></body></html>`
}

export function sendPage (reply: FastifyReply, style: PageStyle, status: number, html: string): FastifyReply {
  return reply.code(status)
    .header('content-type', 'text/html; charset=utf-8')
    .header('content-security-policy', style.csp)
    .header('x-frame-options', 'DENY')
    .header('cache-control', 'no-store')
    .header('referrer-policy', 'no-referrer')
    .header('x-content-type-options', 'nosniff')
    .send(html)
}

export function errorPage (style: PageStyle, config: ResolvedConfig, title: string, description: string): string {
  return layout(style, config, title, `<h1>${escapeHtml(title)}</h1><p>${escapeHtml(description)}</p>
<p class="muted">You can close this window and try again from the application.</p>`)
}

/** Where a redirect URI sends the browser, as the pages tell the user. */
export type Destination =
  | { kind: 'web', host: string }
  | { kind: 'local' }
  | { kind: 'app', scheme: string }

export function destinationOf (redirectUri: string): Destination {
  const url = new URL(redirectUri)
  if (url.protocol === 'https:' || url.protocol === 'http:') {
    return isLoopbackRedirect(redirectUri) ? { kind: 'local' } : { kind: 'web', host: url.host }
  }
  // A private-use scheme names the app that claimed it; what follows "//" is whatever the app chose,
  // not a host the browser goes to (com.evil.app://accounts.google.com/ is not Google).
  return { kind: 'app', scheme: url.protocol.slice(0, -1) }
}

function destinationHtml (d: Destination): string {
  switch (d.kind) {
    case 'web': return `<strong>${escapeHtml(d.host)}</strong>`
    case 'local': return 'an application on this computer (a loopback address)'
    case 'app': return `the app <strong>${escapeHtml(d.scheme)}</strong> (whichever application on this device handles <code>${escapeHtml(d.scheme)}:</code> links)`
  }
}

/** Who the client is, as far as the server can tell. */
export interface ClientView {
  clientName: string
  /** True when the name comes from a verified source (configuration, or a metadata document). */
  nameVerified: boolean
  /** For a client ID metadata document: the host that published it (verified by TLS). */
  verifiedHost?: string
  clientId: string
}

function clientHtml (view: ClientView): string {
  const provenance = view.verifiedHost !== undefined
    ? ` <span class="muted">(published by <strong>${escapeHtml(view.verifiedHost)}</strong>, verified)</span>`
    : view.nameVerified ? '' : ' <span class="muted">(name given by the application itself, not verified)</span>'
  return `<strong><bdi>${escapeHtml(view.clientName)}</bdi></strong>${provenance}`
}

export interface ClientErrorView extends ClientView {
  error: string
  description: string
  /** The client's redirect URI with the error response, which the user may choose to follow. */
  link: string
  destination: Destination
}

/**
 * An error in a request from a client this browser has not approved: redirecting there at once
 * would make this server an open redirector for whoever registers a client (RFC 9700 §4.11.1).
 * The way back is a link the user follows or not; nothing on the page moves by itself.
 */
export function clientErrorPage (style: PageStyle, config: ResolvedConfig, view: ClientErrorView): string {
  const title = 'Request refused'
  return layout(style, config, title, `<h1>${escapeHtml(title)}</h1>
<p>${clientHtml(view)} sent an authorization request that this server cannot accept:</p>
<p><code>${escapeHtml(view.error)}</code> ${escapeHtml(view.description)}</p>
<p>If you started this from that application, you can return to it with this error. The link leads to ${destinationHtml(view.destination)}.</p>
<p><a href="${escapeHtml(view.link)}" rel="noreferrer">Return to the application</a></p>
<p class="muted">Client ID: <code>${escapeHtml(view.clientId)}</code></p>`)
}

export interface ConsentView extends ClientView {
  destination: Destination
  scopes: string[]
  resource: string
  allLoopback: boolean
  request: string
  csrf: string
  action: string
}

export function consentPage (style: PageStyle, config: ResolvedConfig, view: ConsentView): string {
  const scopes = view.scopes.map(s => `<li><code>${escapeHtml(s)}</code></li>`).join('')
  const loopback = view.allLoopback
    ? `<div class="warn">This application only receives authorization on this computer (a loopback address).
Approve only if you started this sign-in yourself, from an application you trust.</div>`
    : ''
  const body = `<h1>${escapeHtml(config.consent.title)}</h1>
<p>${clientHtml(view)} wants to access
<code>${escapeHtml(view.resource)}</code> on your behalf.</p>
<p class="muted">After you approve, you will be sent to ${destinationHtml(view.destination)}.
Client ID: <code>${escapeHtml(view.clientId)}</code></p>
<p>Permissions requested:</p><ul>${scopes}</ul>${loopback}
<form method="post" action="${escapeHtml(view.action)}">
<input type="hidden" name="request" value="${escapeHtml(view.request)}">
<input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}">
<div class="buttons"><button class="primary" type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button></div>
</form>`
  return layout(style, config, config.consent.title, body)
}
