//! Enum fields of the gRPC messages as names in JSON (`"wr_policy": "deny"`), instead of
//! prost's numbers. Reading accepts the name, prost's full name or the number.

pub mod wr_policy {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::v1::WrPolicy;

    fn name(p: WrPolicy) -> &'static str {
        match p {
            WrPolicy::Unspecified => "unspecified",
            WrPolicy::Clamp => "clamp",
            WrPolicy::Deny => "deny",
        }
    }

    pub fn serialize<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        match WrPolicy::try_from(*v) {
            Ok(p) => s.serialize_str(name(p)),
            Err(_) => s.serialize_i32(*v),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i32),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(n),
            Raw::Name(s) => [WrPolicy::Unspecified, WrPolicy::Clamp, WrPolicy::Deny]
                .into_iter()
                .find(|p| s.eq_ignore_ascii_case(name(*p)) || s == p.as_str_name())
                .map(|p| p as i32)
                .ok_or_else(|| D::Error::custom(format!("{s:?} is not a work-request policy"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::v1::{Limits, WrPolicy};

    #[test]
    fn wr_policy_is_a_name_in_json_and_reads_back() {
        let l = Limits {
            wr_policy: WrPolicy::Deny as i32,
            ..Default::default()
        };
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["wr_policy"], "deny");
        assert_eq!(serde_json::from_value::<Limits>(json).unwrap(), l);
        let numeric = serde_json::json!({"wr_policy": 1});
        assert_eq!(
            serde_json::from_value::<Limits>(numeric).unwrap().wr_policy,
            WrPolicy::Clamp as i32
        );
    }
}
