//! `rdmaq certs revoke|revoked`: certificate revocation, kept by the coordinator.

use anyhow::Context;
use rdmaq_proto::v1 as pb;

use super::certs::{CertsCmd, RevokeArgs};
use crate::{
    Ctx,
    output::{Format, Table, clock, json},
};

pub async fn run(ctx: &Ctx, cmd: CertsCmd) -> anyhow::Result<String> {
    let r = match cmd {
        CertsCmd::Revoke(a) => {
            let req = request(a)?;
            ctx.endpoints
                .admin(|mut c| {
                    let req = req.clone();
                    async move { c.revoke(req).await }
                })
                .await?
        }
        _ => {
            ctx.endpoints
                .admin(|mut c| async move { c.list_revoked(pb::ListRevokedRequest {}).await })
                .await?
        }
    };
    if ctx.format == Format::Json {
        return Ok(json(&r.revocations));
    }
    let mut t = Table::new(&["REVOKED", "SERIAL", "IDENTITY"]);
    for rev in &r.revocations {
        t.row(vec![
            clock(rev.revoked_unix_ms),
            rev.serial.clone(),
            rev.identity.clone(),
        ]);
    }
    Ok(t.render())
}

fn request(a: RevokeArgs) -> anyhow::Result<pb::RevokeRequest> {
    let serial = match (a.serial, a.cert) {
        (Some(s), _) => s,
        (None, Some(path)) => {
            rdmaq_common::tls::identity_of(&path)
                .with_context(|| format!("reading the serial of {}", path.display()))?
                .serial
        }
        (None, None) => String::new(),
    };
    Ok(pb::RevokeRequest {
        serial,
        identity: a.identity.unwrap_or_default(),
        lift: a.lift,
    })
}
