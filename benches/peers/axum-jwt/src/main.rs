//! Benchmark peer: what a Rust backend team would write instead of the sidecar, with the
//! usual crates: axum 0.7 with jwt-authorizer 0.15 in front of a pooled hyper-util
//! client (keep-alive) that forwards to the backend with `X-Tenant-ID`, `X-User-ID` and
//! `Authorization: Bearer <the app's access token>`.
//!
//!   peer-axum-jwt session   LISTEN UPSTREAM BASE
//!   peer-axum-jwt app-token LISTEN UPSTREAM ISSUER AUDIENCE
//!
//! session:   JTL session tokens (EdDSA). The access token comes from BASE/oauth2/token
//!            (client credentials, HTTP Basic); the legacy key set from
//!            BASE/account/.well-known/jwks.json with that bearer, loaded into
//!            jwt-authorizer as JWKS text; exp is checked (no iss/aud in these tokens).
//! app-token: JTL app tokens (RS256) from Zitadel: keys from ISSUER/oauth/v2/keys
//!            (jwt-authorizer's refreshing key store), iss, aud and exp checked; the
//!            access token comes from ISSUER/oauth/v2/token (scope openid).
//! A refused token is answered 401 by jwt-authorizer. Every request is fully verified
//! (jwt-authorizer has no verified-token cache). The access token is fetched once at
//! start (the benchmark is shorter than its lifetime).
//! Client credentials: JTL_CLIENT_ID / JTL_CLIENT_SECRET (default: the emulator's).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jwt_authorizer::{Authorizer, IntoLayer, JwtAuthorizer, JwtClaims, Validation};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct SessionClaims {
    #[serde(rename = "tenantId")]
    tenant_id: String,
    #[serde(rename = "userId")]
    user_id: String,
}

#[derive(Debug, Clone, Deserialize)]
struct AppClaims {
    #[serde(rename = "urn:jtl:tenant_id")]
    tenant_id: String,
    sub: String,
}

#[derive(Clone)]
struct Proxy {
    client: Client<HttpConnector, Body>,
    upstream: String,
    bearer: HeaderValue,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Client credentials (HTTP Basic) against TOKEN_URL: the access token.
async fn access_token(token_url: &str, form: &'static str) -> Result<String, BoxError> {
    let id = std::env::var("JTL_CLIENT_ID").unwrap_or_else(|_| "emulated-client".into());
    let secret = std::env::var("JTL_CLIENT_SECRET").unwrap_or_else(|_| "emulated-secret".into());
    // RFC 6749 §2.3.1: id and secret each form-urlencoded before the join (as the sidecar does).
    let basic = base64_encode(format!("{}:{}", form_encode(&id), form_encode(&secret)).as_bytes());
    let client: Client<HttpConnector, Full<bytes_alias::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = hyper::Request::post(token_url)
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::from(form))?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("{token_url}: {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
    }
    Ok(serde_json::from_slice::<Token>(&body)?.access_token)
}

/// GET URL with a bearer: the body as text.
async fn get_text(url: &str, bearer: &str) -> Result<String, BoxError> {
    let client: Client<HttpConnector, Full<bytes_alias::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = hyper::Request::get(url)
        .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
        .body(Full::default())?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("{url}: {status}").into());
    }
    Ok(String::from_utf8(body.to_vec())?)
}

/// `application/x-www-form-urlencoded` for one value: alphanumerics and `*-._` as they
/// are, a space as `+`, every other byte as `%XX`.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Forwards the request to the backend with the verified identity and the access token.
async fn forward(proxy: &Proxy, mut request: Request, tenant: &str, user: &str) -> Response {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match format!("{}{}", proxy.upstream, path).parse() {
        Ok(uri) => uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.remove(header::HOST);
    let (Ok(tenant), Ok(user)) = (HeaderValue::from_str(tenant), HeaderValue::from_str(user)) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    headers.insert("x-tenant-id", tenant);
    headers.insert("x-user-id", user);
    headers.insert(header::AUTHORIZATION, proxy.bearer.clone());
    match proxy.client.request(request).await {
        Ok(response) => response.map(Body::new),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn session_handler(
    State(proxy): State<Proxy>,
    JwtClaims(claims): JwtClaims<SessionClaims>,
    request: Request,
) -> Response {
    forward(&proxy, request, &claims.tenant_id, &claims.user_id).await
}

async fn app_handler(
    State(proxy): State<Proxy>,
    JwtClaims(claims): JwtClaims<AppClaims>,
    request: Request,
) -> Response {
    forward(&proxy, request, &claims.tenant_id, &claims.sub).await
}

// hyper's body type for the start-up calls.
mod bytes_alias {
    pub type Bytes = axum::body::Bytes;
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: peer-axum-jwt session LISTEN UPSTREAM BASE | app-token LISTEN UPSTREAM ISSUER AUDIENCE";
    if args.len() < 5 {
        return Err(usage.into());
    }
    let (mode, listen, upstream, base) = (&args[1], &args[2], &args[3], &args[4]);
    let listen: SocketAddr = listen.parse()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);

    let app = match mode.as_str() {
        "session" => {
            let token = access_token(&format!("{base}/oauth2/token"), "grant_type=client_credentials").await?;
            let jwks = get_text(&format!("{base}/account/.well-known/jwks.json"), &token).await?;
            let auth: Authorizer<SessionClaims> = JwtAuthorizer::from_jwks_text(&jwks)
                .validation(Validation::new().algs(vec![jsonwebtoken::Algorithm::EdDSA]))
                .build()
                .await?;
            let proxy = Proxy { client, upstream: upstream.clone(), bearer: format!("Bearer {token}").parse()? };
            Router::new().fallback(session_handler).layer(auth.into_layer()).with_state(proxy)
        }
        "app-token" => {
            let audience = args.get(5).ok_or(usage)?;
            let token = access_token(
                &format!("{base}/oauth/v2/token"),
                "grant_type=client_credentials&scope=openid",
            )
            .await?;
            let auth: Authorizer<AppClaims> = JwtAuthorizer::from_jwks_url(&format!("{base}/oauth/v2/keys"))
                .validation(
                    Validation::new()
                        .iss(&[base.as_str()])
                        .aud(&[audience.as_str()])
                        .algs(vec![jsonwebtoken::Algorithm::RS256]),
                )
                .build()
                .await?;
            let proxy = Proxy { client, upstream: upstream.clone(), bearer: format!("Bearer {token}").parse()? };
            Router::new().fallback(app_handler).layer(auth.into_layer()).with_state(proxy)
        }
        _ => return Err(usage.into()),
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("peer-axum-jwt {mode} listening on {listen}");
    axum::serve(listener, app).tcp_nodelay(true).await?;
    Ok(())
}
