//! Mints RS256 test tokens for the load harness: `mint-tokens KEY.pem KID ISSUER AUDIENCE COUNT`
//! prints COUNT tokens (distinct subjects `user-0`…), one per line, valid for two hours.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key, kid, issuer, audience, count] = args.as_slice() else {
        return Err("usage: mint-tokens KEY.pem KID ISSUER AUDIENCE COUNT".into());
    };
    let key = EncodingKey::from_rsa_pem(&std::fs::read(key)?)?;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.clone());
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut out = String::new();
    for i in 0..count.parse::<usize>()? {
        let claims = serde_json::json!({"iss": issuer, "aud": audience, "sub": format!("user-{i}"), "iat": now, "exp": now + 7200, "scope": "mcp:tools"});
        out.push_str(&jsonwebtoken::encode(&header, &claims, &key)?);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}
