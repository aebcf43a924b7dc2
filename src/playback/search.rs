//! Finding recordings the way a contact center looks for them: by the
//! platform's call id, by when the call started, by labels and
//! participants (matched through the tenant's keyed blind index, since both
//! are encrypted), by duration and by the KMS key that wraps them; newest
//! first unless asked otherwise, a page at a time. One search serves gRPC
//! `ListRecordings` and the supervisor page's `GET /api/v1/recordings`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{StreamExt, TryStreamExt};

use super::{RecordingView, cipher_for, open_labels, require_reader};
use crate::archive::Archive;
use crate::audit::event::Action as AuditAction;
use crate::audit::trail;
use crate::catalog::RecordingRow;
use crate::catalog::search::{self as catalog_search, Query, SortKey};
use crate::catalog::subjects;
use crate::domain::{ExternalCallId, KeyArn, Participants, Principal, RecordingId};
use crate::error::{Error, Result};

/// How much of each recording a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Labels and participants decrypted (one cached unwrap per recording).
    #[default]
    Full,
    /// Catalog metadata only: no data key is opened.
    Basic,
}

/// What to look for: every condition that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub call_id: Option<String>,
    /// Start time (creation, for a call without one) in `[from_ms, to_ms)`.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Every one must be among the recording's labels.
    pub labels: BTreeMap<String, String>,
    /// A participant in any role, normalized as at ingest.
    pub participant: Option<String>,
    pub min_duration_ms: Option<u64>,
    pub max_duration_ms: Option<u64>,
    pub key_arn: Option<String>,
    /// `start_time desc` (empty: the default), `start_time asc`,
    /// `create_time desc` or `create_time asc`.
    pub order_by: String,
    pub view: View,
    /// 0: the interface's default.
    pub page_size: u32,
    /// From a previous page of the same search; empty for the first.
    pub page_token: String,
}

/// An interface's page sizes: the default for 0, and the most allowed.
#[derive(Debug, Clone, Copy)]
pub struct PageSizes {
    pub default: u32,
    pub max: u32,
}

/// gRPC `ListRecordings`.
pub const GRPC_PAGES: PageSizes = PageSizes {
    default: 100,
    max: 1000,
};

/// The supervisor page's API.
pub const PAGE_API_PAGES: PageSizes = PageSizes {
    default: 50,
    max: 200,
};

/// One page of matches.
#[derive(Debug)]
pub struct Page {
    pub recordings: Vec<RecordingView>,
    /// Empty on the last page.
    pub next_page_token: String,
    /// Recordings not in the blind index yet, which a label or participant
    /// search cannot see (0 for other searches).
    pub unindexed_count: u64,
}

/// How many recordings are opened at once for a FULL page: a cold key
/// cache costs one KMS round trip per recording, and they overlap.
const OPEN_AT_ONCE: usize = 16;

/// One page of the tenant's recordings matching `q`.
pub async fn search(
    archive: &Archive,
    principal: &Principal,
    q: &Search,
    sizes: PageSizes,
) -> Result<Page> {
    require_reader(archive, principal).await?;
    let mut query = query_of(q, sizes)?;
    if !q.labels.is_empty() || q.participant.is_some() {
        let index = crate::compliance::subjects::tenant_index(archive, &principal.tenant).await?;
        query.digests = q.labels.iter().map(|(k, v)| index.label(k, v)).collect();
        if let Some(p) = &q.participant {
            query.digests.push(index.participant("participant", p)?);
        }
        query.digests.sort_unstable();
        query.digests.dedup();
    }
    let fingerprint = fingerprint(&query);
    if !q.page_token.is_empty() {
        query.after = Some(decode_token(&q.page_token, &fingerprint)?);
    }
    let size = query.limit;
    query.limit = size + 1;
    let mut conn = archive.catalog.conn().await?;
    let mut rows = catalog_search::query(&mut conn, &principal.tenant, &query).await?;
    let unindexed_count = if query.digests.is_empty() {
        0
    } else {
        subjects::unindexed_count(&mut conn, &principal.tenant).await?
    };
    drop(conn);
    let next_page_token = if rows.len() > size as usize {
        rows.truncate(size as usize);
        rows.last()
            .map(|r| encode_token(query.sort.of(r), r.id, &fingerprint))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let recordings: Vec<RecordingView> = futures::stream::iter(rows)
        .map(|row| open(archive, row, q.view))
        .buffered(OPEN_AT_ONCE)
        .try_collect()
        .await?;
    // Who saw that which calls exist, and what they searched by: never a
    // label value or a participant.
    trail::record(
        archive,
        principal,
        trail::by(principal, AuditAction::RecordingsListed)
            .recordings(recordings.iter().map(|v| v.row.id))
            .detail("page_size", size)
            .detail("after", query.after.map(|(_, id)| id.to_string()))
            .detail("call_id_search", q.call_id.is_some())
            .detail("from_ms", q.from_ms)
            .detail("to_ms", q.to_ms)
            .detail(
                "label_keys",
                q.labels.keys().cloned().collect::<Vec<_>>().join(","),
            )
            .detail("participant_search", q.participant.is_some())
            .detail("min_duration_ms", q.min_duration_ms)
            .detail("max_duration_ms", q.max_duration_ms)
            .detail("key_arn", q.key_arn.clone())
            .detail("order_by", order_name(query.sort, query.descending))
            .detail(
                "view",
                match q.view {
                    View::Full => "full",
                    View::Basic => "basic",
                },
            ),
    )
    .await?;
    Ok(Page {
        recordings,
        next_page_token,
        unindexed_count,
    })
}

/// The catalog query of a search, validated (digests and cursor not yet).
fn query_of(q: &Search, sizes: PageSizes) -> Result<Query> {
    let limit = match q.page_size {
        0 => sizes.default,
        n if n > sizes.max => {
            return Err(Error::invalid(
                "page_size",
                &format!("must be at most {}", sizes.max),
            ));
        }
        n => n,
    };
    let (sort, descending) = parse_order(&q.order_by)?;
    if let (Some(from), Some(to)) = (q.from_ms, q.to_ms)
        && from >= to
    {
        return Err(Error::invalid(
            "start_time_to",
            "must be later than start_time_from",
        ));
    }
    if let (Some(min), Some(max)) = (q.min_duration_ms, q.max_duration_ms)
        && min > max
    {
        return Err(Error::invalid(
            "max_duration_ms",
            "must not be less than min_duration_ms",
        ));
    }
    crate::ingest::validate_labels("labels", &q.labels)?;
    Ok(Query {
        call_id: q
            .call_id
            .as_deref()
            .map(|c| {
                ExternalCallId::parse(c).map_err(|e| Error::invalid("external_call_id", &e.reason))
            })
            .transpose()?,
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        min_duration_ms: q.min_duration_ms,
        max_duration_ms: q.max_duration_ms,
        key_arn: q
            .key_arn
            .as_deref()
            .map(|k| KeyArn::parse("kms_key_arn", k))
            .transpose()?,
        digests: Vec::new(),
        sort,
        descending,
        after: None,
        limit,
    })
}

fn parse_order(order_by: &str) -> Result<(SortKey, bool)> {
    let words: Vec<&str> = order_by.split_whitespace().collect();
    let (field, dir) = match words.as_slice() {
        [] => return Ok((SortKey::StartTime, true)),
        [f] => (*f, "asc"),
        [f, d] => (*f, *d),
        _ => ("", ""),
    };
    let sort = match field {
        "start_time" => SortKey::StartTime,
        "create_time" => SortKey::CreateTime,
        _ => {
            return Err(Error::invalid(
                "order_by",
                "must be `start_time` or `create_time`, optionally followed by `asc` or `desc`",
            ));
        }
    };
    match dir.to_ascii_lowercase().as_str() {
        "asc" => Ok((sort, false)),
        "desc" => Ok((sort, true)),
        _ => Err(Error::invalid(
            "order_by",
            "the direction must be `asc` or `desc`",
        )),
    }
}

fn order_name(sort: SortKey, descending: bool) -> &'static str {
    match (sort, descending) {
        (SortKey::StartTime, true) => "start_time desc",
        (SortKey::StartTime, false) => "start_time asc",
        (SortKey::CreateTime, true) => "create_time desc",
        (SortKey::CreateTime, false) => "create_time asc",
    }
}

/// What a page token is bound to: the filters and the order (AIP-158: a
/// token used with another query is refused, not silently misapplied).
/// Digests stand for labels and participants, so no value is hashed here.
fn fingerprint(q: &Query) -> [u8; 8] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut field = |tag: &str, v: &[u8]| {
        ctx.update(tag.as_bytes());
        ctx.update(&(v.len() as u64).to_be_bytes());
        ctx.update(v);
    };
    let opt_i = |v: Option<i64>| v.map(|v| v.to_be_bytes().to_vec()).unwrap_or_default();
    let opt_u = |v: Option<u64>| v.map(|v| v.to_be_bytes().to_vec()).unwrap_or_default();
    field(
        "call",
        q.call_id.as_ref().map_or(b"", |c| c.as_str().as_bytes()),
    );
    field("from", &opt_i(q.from_ms));
    field("to", &opt_i(q.to_ms));
    field("min", &opt_u(q.min_duration_ms));
    field("max", &opt_u(q.max_duration_ms));
    field(
        "key",
        q.key_arn.as_ref().map_or(b"", |k| k.as_str().as_bytes()),
    );
    for d in &q.digests {
        field("digest", d);
    }
    field("order", order_name(q.sort, q.descending).as_bytes());
    let digest = ctx.finish();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest.as_ref()[..8]);
    out
}

/// `v1.<sort value>.<recording id>.<fingerprint>`, base64url.
fn encode_token(sort_value: i64, id: RecordingId, fingerprint: &[u8; 8]) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1.{sort_value}.{id}.{}", hex::encode(fingerprint)))
}

fn decode_token(token: &str, fingerprint: &[u8; 8]) -> Result<(i64, RecordingId)> {
    let bad = || Error::invalid("page_token", "is not a token from a previous response");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = text.split('.');
    let (Some("v1"), Some(value), Some(id), Some(fp), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let value = value.parse::<i64>().map_err(|_| bad())?;
    let id = RecordingId::parse("page_token", id).map_err(|_| bad())?;
    if fp != hex::encode(fingerprint) {
        return Err(Error::invalid(
            "page_token",
            "belongs to a search with other filters or another order; repeat the first request's filters and order_by",
        ));
    }
    Ok((value, id))
}

/// A row as the view asks: in the full view, with its labels and
/// participants opened. A key KMS refuses now (disabled, pending deletion)
/// must not hide the rest of the page: that recording is shown without them.
async fn open(archive: &Archive, row: RecordingRow, view: View) -> Result<RecordingView> {
    let sealed = row.labels_sealed.is_some() || row.participants_sealed.is_some();
    if view == View::Basic || !sealed {
        return Ok(RecordingView {
            row,
            labels: BTreeMap::new(),
            participants: Participants::new(),
        });
    }
    let cipher = match cipher_for(archive, &row).await {
        Ok(c) => c,
        Err(Error::Kms(e)) if crate::revocation::is_refusal(&e) => {
            return Ok(RecordingView {
                row,
                labels: BTreeMap::new(),
                participants: Participants::new(),
            });
        }
        Err(e) => return Err(e),
    };
    let labels = open_labels(&cipher, &row)?;
    let participants = match &row.participants_sealed {
        Some(sealed) => crate::compliance::subjects::open_participants(&cipher, row.id, sealed)?,
        None => Participants::new(),
    };
    Ok(RecordingView {
        row,
        labels,
        participants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_parse_as_aip_132_spells_them() {
        assert_eq!(parse_order("").unwrap(), (SortKey::StartTime, true));
        assert_eq!(
            parse_order("start_time").unwrap(),
            (SortKey::StartTime, false)
        );
        assert_eq!(
            parse_order("create_time DESC").unwrap(),
            (SortKey::CreateTime, true)
        );
        assert_eq!(
            parse_order("  start_time   asc ").unwrap(),
            (SortKey::StartTime, false)
        );
        for bad in ["size desc", "start_time sideways", "start_time asc extra"] {
            assert!(parse_order(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_works_only_for_its_own_search() {
        let q = query_of(&Search::default(), GRPC_PAGES).unwrap();
        let id = RecordingId::new();
        let token = encode_token(-5, id, &fingerprint(&q));
        assert_eq!(decode_token(&token, &fingerprint(&q)).unwrap(), (-5, id));
        let other = query_of(
            &Search {
                order_by: "start_time asc".into(),
                ..Search::default()
            },
            GRPC_PAGES,
        )
        .unwrap();
        let err = decode_token(&token, &fingerprint(&other)).unwrap_err();
        assert!(err.to_string().contains("other filters"), "{err}");
        for junk in ["", "x", "djE", &URL_SAFE_NO_PAD.encode("v1.1.2.3")] {
            assert!(decode_token(junk, &fingerprint(&q)).is_err(), "{junk}");
        }
    }

    #[test]
    fn bad_ranges_and_sizes_name_their_field() {
        let err = |s: Search| query_of(&s, GRPC_PAGES).unwrap_err().to_string();
        assert!(
            err(Search {
                page_size: 1001,
                ..Search::default()
            })
            .contains("page_size")
        );
        assert!(
            err(Search {
                from_ms: Some(10),
                to_ms: Some(10),
                ..Search::default()
            })
            .contains("start_time_to")
        );
        assert!(
            err(Search {
                min_duration_ms: Some(10),
                max_duration_ms: Some(9),
                ..Search::default()
            })
            .contains("max_duration_ms")
        );
        assert!(
            err(Search {
                key_arn: Some("nope".into()),
                ..Search::default()
            })
            .contains("kms_key_arn")
        );
    }
}
