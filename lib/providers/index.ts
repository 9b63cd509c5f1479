export { UpstreamError } from '../errors.js'
export type { UpstreamErrorKind } from '../errors.js'
export { keepRenewedTokens } from './types.js'
export type {
  AuthorizationUrlInput,
  ExchangeInput,
  Provider,
  UpstreamTokens,
  UpstreamUser
} from './types.js'
export { oidcProvider } from './oidc.js'
export type { MapUser, OidcClaims, OidcProviderOptions } from './oidc.js'
export { googleProvider, GOOGLE_ISSUER } from './google.js'
export type { GoogleProviderOptions } from './google.js'
export { githubProvider } from './github.js'
export type { GithubProviderOptions } from './github.js'
