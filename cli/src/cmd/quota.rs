//! `rdmaq quota set|get|list|delete`.

use clap::{Args, Subcommand, ValueEnum};
use rdmaq_common::units::{parse_rate, parse_size};
use rdmaq_model::{Limits, QpTypes, WrPolicy};
use rdmaq_proto::v1 as pb;

use crate::{
    Ctx,
    output::{Format, Table, cap, cap_bytes, json},
};

#[derive(Debug, Subcommand)]
pub enum QuotaCmd {
    /// Set a tenant's caps. Fields not given keep their current value (`--replace`: unset).
    Set(SetArgs),
    /// Show one tenant's caps.
    Get { tenant: String },
    /// List every tenant's caps.
    List,
    /// Remove a tenant's quota (the tenant is no longer capped).
    Delete { tenant: String },
}

/// `--qp-types`: a list, or `any`.
#[derive(Debug, Clone, Copy)]
pub enum QpTypesArg {
    Any,
    Only(QpTypes),
}

fn parse_qp_types(s: &str) -> Result<QpTypesArg, String> {
    if s.eq_ignore_ascii_case("any") {
        Ok(QpTypesArg::Any)
    } else {
        QpTypes::parse(s).map(QpTypesArg::Only)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WrPolicyArg {
    Clamp,
    Deny,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    pub tenant: String,
    /// Cluster-wide QPs.
    #[arg(long)]
    pub max_qp: Option<u64>,
    /// Cluster-wide MRs.
    #[arg(long)]
    pub max_mr: Option<u64>,
    /// Cluster-wide pinned MR bytes (e.g. 10GiB).
    #[arg(long, value_parser = parse_size)]
    pub max_mr_bytes: Option<u64>,
    #[arg(long)]
    pub max_qp_per_node: Option<u64>,
    #[arg(long)]
    pub max_mr_per_node: Option<u64>,
    #[arg(long, value_parser = parse_size)]
    pub max_mr_bytes_per_node: Option<u64>,
    #[arg(long)]
    pub max_qp_per_process: Option<u64>,
    #[arg(long)]
    pub max_mr_per_process: Option<u64>,
    #[arg(long, value_parser = parse_size)]
    pub max_mr_bytes_per_process: Option<u64>,
    /// Largest max_send_wr a QP may ask for.
    #[arg(long)]
    pub max_send_wr: Option<u32>,
    /// Largest max_recv_wr a QP may ask for.
    #[arg(long)]
    pub max_recv_wr: Option<u32>,
    /// What happens to a QP asking for more work requests: clamp them, or deny the QP.
    #[arg(long, value_enum)]
    pub wr_policy: Option<WrPolicyArg>,
    /// QP creations per second per node (e.g. 500/s).
    #[arg(long, value_parser = parse_rate)]
    pub qp_create_rate: Option<u32>,
    /// MR registrations per second per node.
    #[arg(long, value_parser = parse_rate)]
    pub mr_create_rate: Option<u32>,
    /// QP types the tenant may create, e.g. RC,UD (also UC, RAW_PACKET, XRC, XRC_SEND,
    /// XRC_RECV); `any` lifts the restriction.
    #[arg(long, value_parser = parse_qp_types)]
    pub qp_types: Option<QpTypesArg>,
    /// Start from no caps instead of the tenant's current ones.
    #[arg(long)]
    pub replace: bool,
}

impl SetArgs {
    /// The caps given on the command line, over `l`.
    fn apply_to(&self, l: &mut Limits) {
        let over = |cap: &mut Option<u64>, given: Option<u64>| *cap = given.or(*cap);
        over(&mut l.cluster.qp, self.max_qp);
        over(&mut l.cluster.mr, self.max_mr);
        over(&mut l.cluster.mr_bytes, self.max_mr_bytes);
        over(&mut l.per_node.qp, self.max_qp_per_node);
        over(&mut l.per_node.mr, self.max_mr_per_node);
        over(&mut l.per_node.mr_bytes, self.max_mr_bytes_per_node);
        over(&mut l.per_process.qp, self.max_qp_per_process);
        over(&mut l.per_process.mr, self.max_mr_per_process);
        over(&mut l.per_process.mr_bytes, self.max_mr_bytes_per_process);
        l.max_send_wr = self.max_send_wr.or(l.max_send_wr);
        l.max_recv_wr = self.max_recv_wr.or(l.max_recv_wr);
        l.qp_create_per_sec = self.qp_create_rate.or(l.qp_create_per_sec);
        l.mr_create_per_sec = self.mr_create_rate.or(l.mr_create_per_sec);
        match self.qp_types {
            Some(QpTypesArg::Any) => l.qp_types = None,
            Some(QpTypesArg::Only(t)) => l.qp_types = Some(t),
            None => {}
        }
        if let Some(p) = self.wr_policy {
            l.wr_policy = match p {
                WrPolicyArg::Clamp => WrPolicy::Clamp,
                WrPolicyArg::Deny => WrPolicy::Deny,
            };
        }
    }
}

pub async fn run(ctx: &Ctx, cmd: QuotaCmd) -> anyhow::Result<String> {
    match cmd {
        QuotaCmd::Set(args) => {
            let mut limits = Limits::NONE;
            if !args.replace {
                let tenant = args.tenant.clone();
                match ctx
                    .endpoints
                    .admin(|mut c| {
                        let tenant = tenant.clone();
                        async move { c.get_quota(pb::TenantRequest { tenant }).await }
                    })
                    .await
                {
                    Ok(q) => limits = Limits::of_quota(&q),
                    Err(crate::client::ClientError::Status(s))
                        if s.code() == tonic::Code::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            args.apply_to(&mut limits);
            let req = pb::SetQuotaRequest {
                tenant: args.tenant.clone(),
                limits: Some((&limits).into()),
            };
            let q = ctx
                .endpoints
                .admin(|mut c| {
                    let req = req.clone();
                    async move { c.set_quota(req).await }
                })
                .await?;
            Ok(render(ctx.format, &[q]))
        }
        QuotaCmd::Get { tenant } => {
            let q = ctx
                .endpoints
                .admin(|mut c| {
                    let tenant = tenant.clone();
                    async move { c.get_quota(pb::TenantRequest { tenant }).await }
                })
                .await?;
            Ok(render(ctx.format, &[q]))
        }
        QuotaCmd::List => {
            let r = ctx
                .endpoints
                .admin(|mut c| async move { c.list_quotas(pb::ListQuotasRequest {}).await })
                .await?;
            Ok(render(ctx.format, &r.quotas))
        }
        QuotaCmd::Delete { tenant } => {
            ctx.endpoints
                .admin(|mut c| {
                    let tenant = tenant.clone();
                    async move { c.delete_quota(pb::TenantRequest { tenant }).await }
                })
                .await?;
            Ok(match ctx.format {
                Format::Json => json(&serde_json::json!({ "deleted": tenant })),
                Format::Table => format!("quota of {tenant} deleted"),
            })
        }
    }
}

fn render(format: Format, quotas: &[pb::Quota]) -> String {
    if format == Format::Json {
        return if quotas.len() == 1 {
            json(&quotas[0])
        } else {
            json(&quotas)
        };
    }
    let mut t = Table::new(&[
        "TENANT",
        "QP",
        "MR",
        "MR-BYTES",
        "QP/NODE",
        "MR/NODE",
        "BYTES/NODE",
        "QP/PROC",
        "MR/PROC",
        "BYTES/PROC",
        "SEND-WR",
        "RECV-WR",
        "QP/S",
        "MR/S",
        "QP-TYPES",
        "VERSION",
    ]);
    for q in quotas {
        let l = Limits::of_quota(q);
        let small = |v: Option<u32>| cap(v.map(u64::from));
        t.row(vec![
            q.tenant.clone(),
            cap(l.cluster.qp),
            cap(l.cluster.mr),
            cap_bytes(l.cluster.mr_bytes),
            cap(l.per_node.qp),
            cap(l.per_node.mr),
            cap_bytes(l.per_node.mr_bytes),
            cap(l.per_process.qp),
            cap(l.per_process.mr),
            cap_bytes(l.per_process.mr_bytes),
            small(l.max_send_wr),
            small(l.max_recv_wr),
            small(l.qp_create_per_sec),
            small(l.mr_create_per_sec),
            l.qp_types
                .map_or_else(|| "-".to_string(), |t| t.to_string()),
            q.version.to_string(),
        ]);
    }
    t.render()
}
