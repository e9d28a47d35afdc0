//! Who may use the proxy: loopback by default; a non-loopback address only when asked for, and
//! then only clients with the token (`Authorization: Bearer TOKEN`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use http::HeaderMap;

use crate::exit::CliError;

/// The environment variable the client token is read from.
pub const PROXY_TOKEN_ENV: &str = "FABRAIX_PROXY_TOKEN";

/// The token clients must present, if any. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ClientToken(Option<String>);

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = if self.0.is_some() { "set" } else { "none" };
        write!(f, "ClientToken({set})")
    }
}

impl ClientToken {
    /// No token: every client on loopback may send.
    pub fn none() -> Self {
        Self(None)
    }

    /// Whether clients must present a token.
    pub fn required(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `headers` carry `Authorization: Bearer TOKEN` (compared in constant time);
    /// always true without a token.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.0 else {
            return true;
        };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
    }

    /// The token from `--token-file`, else `FABRAIX_PROXY_TOKEN` (`env` looks variables up).
    pub fn read(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CliError> {
        let raw = match file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| CliError::new(format!("--token-file {}: {e}", path.display())))?,
            ),
            None => env(PROXY_TOKEN_ENV),
        };
        match raw.as_deref().map(str::trim) {
            None => Ok(Self(None)),
            Some("") => Err(CliError::new("the client token is empty")),
            Some(t) if t.len() < 16 => Err(CliError::new(
                "the client token is shorter than 16 characters (use a random one)",
            )),
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => Err(CliError::new(
                "the client token must be printable ASCII without spaces",
            )),
            Some(t) => Ok(Self(Some(t.to_string()))),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The address `--listen` names: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, CliError> {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = listen
        .strip_prefix("localhost:")
        .and_then(|p| p.parse::<u16>().ok());
    match port {
        Some(port) => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        None => Err(CliError::new(format!(
            "--listen {listen:?} is not an address (e.g. 127.0.0.1:8788, [::1]:8788, localhost:0)"
        ))),
    }
}

/// Checks the address against the flags: loopback is always allowed; anything else only with
/// `--allow-non-loopback` and a token.
pub fn check_listen(
    addr: SocketAddr,
    allow_non_loopback: bool,
    token: &ClientToken,
) -> Result<(), CliError> {
    if is_loopback(addr.ip()) {
        return Ok(());
    }
    if !allow_non_loopback {
        return Err(CliError::new(format!(
            "--listen {addr}: not a loopback address. The proxy adds the API key to every request \
             it forwards, so anyone who can reach it can spend the key. Pass --allow-non-loopback \
             and set a client token ({PROXY_TOKEN_ENV} or --token-file) to listen there."
        )));
    }
    if !token.required() {
        return Err(CliError::new(format!(
            "--listen {addr} with --allow-non-loopback needs a client token: set {PROXY_TOKEN_ENV} \
             or --token-file (clients send Authorization: Bearer TOKEN)"
        )));
    }
    Ok(())
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    fn token() -> ClientToken {
        ClientToken::read(None, |_| Some(TOKEN.to_string())).unwrap()
    }

    #[test]
    fn loopback_is_allowed_and_anything_else_needs_the_flag_and_a_token() {
        let none = ClientToken::none();
        for ok in ["127.0.0.1:0", "127.0.0.2:80", "[::1]:0", "localhost:9"] {
            assert!(
                check_listen(parse_listen(ok).unwrap(), false, &none).is_ok(),
                "{ok}"
            );
        }
        let open = parse_listen("0.0.0.0:8788").unwrap();
        let e = check_listen(open, false, &none).unwrap_err().to_string();
        assert!(e.contains("--allow-non-loopback"), "{e}");
        let e = check_listen(open, true, &none).unwrap_err().to_string();
        assert!(e.contains(PROXY_TOKEN_ENV), "{e}");
        assert!(check_listen(open, true, &token()).is_ok());
        assert!(parse_listen("example.com:80").is_err());
    }

    #[test]
    fn the_token_is_checked_and_never_printed() {
        let t = token();
        assert!(!format!("{t:?}").contains(TOKEN));
        let mut h = HeaderMap::new();
        assert!(!t.admits(&h));
        h.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        assert!(t.admits(&h));
        h.insert(
            "authorization",
            "Bearer 0123456789abcdef-tokeN".parse().unwrap(),
        );
        assert!(!t.admits(&h));
        assert!(ClientToken::none().admits(&HeaderMap::new()));
        assert!(ClientToken::read(None, |_| Some("short".into())).is_err());
        assert!(ClientToken::read(None, |_| None).unwrap().0.is_none());
    }
}
