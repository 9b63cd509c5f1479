import type { ResolvedConfig, ResolvedResource } from '../options/index.js'

/** RFC 8414 authorization server metadata: only what this server actually serves. */
export function authorizationServerMetadata (config: ResolvedConfig): Record<string, unknown> {
  const metadata: Record<string, unknown> = {
    issuer: config.issuer,
    authorization_endpoint: config.endpoints.authorization,
    token_endpoint: config.endpoints.token,
    scopes_supported: config.scopes,
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
    revocation_endpoint: config.endpoints.revocation,
    revocation_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
    introspection_endpoint: config.endpoints.introspection,
    introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true
  }
  if (config.cimd.enabled) metadata.client_id_metadata_document_supported = true
  if (config.registration.mode !== 'off') metadata.registration_endpoint = `${config.issuer}/oauth/register`
  if (config.serviceDocumentation !== undefined) metadata.service_documentation = config.serviceDocumentation
  return metadata
}

/** RFC 9728 protected resource metadata for one resource. */
export function protectedResourceMetadata (config: ResolvedConfig, resource: ResolvedResource): Record<string, unknown> {
  const metadata: Record<string, unknown> = {
    resource: resource.resource,
    authorization_servers: [config.issuer],
    scopes_supported: resource.scopes,
    bearer_methods_supported: ['header']
  }
  if (resource.name !== undefined) metadata.resource_name = resource.name
  if (resource.documentation !== undefined) metadata.resource_documentation = resource.documentation
  return metadata
}
