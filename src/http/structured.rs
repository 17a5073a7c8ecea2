//! Targeted cache control (RFC 9213): `CDN-Cache-Control` is a Dictionary structured field
//! (RFC 9651, parsed by the `sfv` crate). A field that does not parse is ignored as a whole;
//! a directive with a value of the wrong type is taken the way that risks least.

use sfv::{BareItem, Dictionary, ListEntry, Parser};

use super::cache_control::{CacheControl, Delta, FieldList, MAX_DELTA_SECONDS};

/// The directives of a targeted field's lines (joined as one list, RFC 9110 §5.3), or `None`
/// when they are not a valid Dictionary: the field is then ignored (RFC 9213 §2.1).
pub fn targeted_cache_control<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<CacheControl> {
    let mut joined = Vec::new();
    for line in lines {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(line);
    }
    let dict: Dictionary = Parser::new(&joined).parse().ok()?;
    let mut cc = CacheControl::default();
    for (key, entry) in &dict {
        let item = match entry {
            ListEntry::Item(item) => Some(&item.bare_item),
            ListEntry::InnerList(_) => None,
        };
        match key.as_str() {
            "max-age" => cc.max_age = Some(delta(item)),
            "s-maxage" => cc.s_maxage = Some(delta(item)),
            "stale-while-revalidate" => cc.stale_while_revalidate = Some(delta(item)),
            "stale-if-error" => cc.stale_if_error = Some(delta(item)),
            // Restrictive directives hold unless explicitly `?0`: a value of another type is
            // read the safe way.
            "no-store" => cc.no_store = restricts(item),
            "must-revalidate" => cc.must_revalidate = restricts(item),
            "proxy-revalidate" => cc.proxy_revalidate = restricts(item),
            "no-cache" => cc.no_cache = fields(entry),
            "private" => cc.private = fields(entry),
            // Permissive ones only when plainly `true`.
            "public" => cc.public = item == Some(&BareItem::Boolean(true)),
            "immutable" => cc.immutable = item == Some(&BareItem::Boolean(true)),
            "no-transform" => cc.no_transform = restricts(item),
            "must-understand" => cc.must_understand = item == Some(&BareItem::Boolean(true)),
            _ => {}
        }
    }
    Some(cc)
}

/// An Integer of seconds; anything else (a string, a decimal, a negative number, no value) is
/// invalid, which freshness reads as stale (RFC 9111 §4.2.1).
fn delta(item: Option<&BareItem>) -> Delta {
    match item {
        Some(BareItem::Integer(n)) => match u64::try_from(i64::from(*n)) {
            Ok(secs) => Delta::Valid(secs.min(MAX_DELTA_SECONDS)),
            Err(_) => Delta::Invalid,
        },
        _ => Delta::Invalid,
    }
}

fn restricts(item: Option<&BareItem>) -> bool {
    item != Some(&BareItem::Boolean(false))
}

/// `no-cache` / `private`: the whole response, or the fields a String or an inner list of
/// Strings or Tokens names; `?0` is absent.
fn fields(entry: &ListEntry) -> Option<FieldList> {
    let names: Vec<String> = match entry {
        ListEntry::Item(item) => match &item.bare_item {
            BareItem::Boolean(false) => return None,
            BareItem::String(s) => s
                .as_str()
                .split(',')
                .map(|f| f.trim().to_ascii_lowercase())
                .filter(|f| !f.is_empty())
                .collect(),
            _ => Vec::new(),
        },
        ListEntry::InnerList(list) => list
            .items
            .iter()
            .filter_map(|i| match &i.bare_item {
                BareItem::String(s) => Some(s.as_str().to_ascii_lowercase()),
                BareItem::Token(t) => Some(t.as_str().to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
    };
    Some(if names.is_empty() {
        FieldList::All
    } else {
        FieldList::Fields(names)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Option<CacheControl> {
        targeted_cache_control(lines.iter().map(|l| l.as_bytes()))
    }

    #[test]
    fn a_valid_dictionary_gives_its_directives() {
        let cc = parse(&["max-age=60, stale-while-revalidate=5", "must-revalidate"]).unwrap();
        assert_eq!(cc.max_age, Some(Delta::Valid(60)));
        assert_eq!(cc.stale_while_revalidate, Some(Delta::Valid(5)));
        assert!(cc.must_revalidate);
        // Parameters are ignored; `; no-store` is a parameter of max-age, not a directive.
        let cc = parse(&["max-age=60;foo=bar, public"]).unwrap();
        assert_eq!(cc.max_age, Some(Delta::Valid(60)));
        assert!(cc.public);
        assert!(!parse(&["max-age=60; no-store"]).unwrap().no_store);
        let cc = parse(&[r#"no-cache=("set-cookie" x-a), private="X-B""#]).unwrap();
        assert_eq!(
            cc.no_cache,
            Some(FieldList::Fields(vec!["set-cookie".into(), "x-a".into()]))
        );
        assert_eq!(cc.private, Some(FieldList::Fields(vec!["x-b".into()])));
        assert!(!parse(&["no-store=?0"]).unwrap().no_store);
        assert!(parse(&["no-store"]).unwrap().no_store);
    }

    #[test]
    fn wrong_types_are_read_the_safe_way() {
        assert_eq!(
            parse(&["max-age=\"60\""]).unwrap().max_age,
            Some(Delta::Invalid)
        );
        assert_eq!(
            parse(&["max-age=6.5"]).unwrap().max_age,
            Some(Delta::Invalid)
        );
        assert_eq!(
            parse(&["max-age=-1"]).unwrap().max_age,
            Some(Delta::Invalid)
        );
        assert_eq!(parse(&["max-age"]).unwrap().max_age, Some(Delta::Invalid));
        assert!(parse(&["no-store=1"]).unwrap().no_store);
        assert!(!parse(&["public=1"]).unwrap().public);
    }

    #[test]
    fn an_invalid_field_is_ignored_whole() {
        for bad in [
            "max-age=60, Max-Age=5",
            "max-age=60,,",
            "max-age=60 no-store",
            "max-age=\"60",
            "max-age=9999999999999999",
        ] {
            assert_eq!(parse(&[bad]), None, "{bad}");
        }
    }
}
