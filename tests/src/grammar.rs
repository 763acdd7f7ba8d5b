//! Random statistician queries over the synthetic SNDS, each with its oracle:
//! the same query written for raw DataFusion, with the person joined in by
//! hand and `count(DISTINCT person)` per cell, so that a test can check every
//! released cell against the raw data.
//!
//! The grammar covers the shapes of DESIGN.md §2 rule 3: tables that reach
//! the person through one or two links, user-written joins on the person,
//! outer joins, joins with code lists, per-person subqueries, CTEs, UNION
//! ALL and IN subqueries, with filters, one to three group keys (columns and
//! expressions) and several aggregates, and sometimes a HAVING.

use rand::Rng;
use rand::seq::IndexedRandom;

/// A generated query and its oracle.
#[derive(Debug, Clone)]
pub struct GeneratedQuery {
    /// The query as a user sends it to seuil.
    pub seuil_sql: String,
    /// The same cells on raw data, with the distinct persons of each cell
    /// as the last column.
    pub raw_sql: String,
    /// Number of group columns (the cell's coordinates), first in both.
    pub group_columns: usize,
}

/// Column expressions of one table alias.
struct Pool {
    /// Expressions that may be grouped on.
    groupable: &'static [&'static str],
    /// Conditions that may filter.
    filters: &'static [&'static str],
    /// Aggregates that may be released (none over sensitive columns, whose
    /// sums are clamped by the magnitude rule).
    aggregates: &'static [&'static str],
}

const BEN: Pool = Pool {
    groupable: &[
        "b.ben_sex_cod",
        "b.ben_res_dpt",
        "b.ben_nai_ann / 10 * 10",
        "b.ben_rng_gem",
        "b.ben_dcd_dte IS NULL",
        "substr(b.ben_res_dpt, 1, 2)",
        "CASE WHEN b.ben_nai_ann < 1960 THEN 'old' ELSE 'young' END",
    ],
    filters: &[
        "b.ben_sex_cod = 1",
        "b.ben_sex_cod = 2",
        "b.ben_nai_ann BETWEEN 1940 AND 1970",
        "b.ben_nai_ann >= 1990",
        "b.ben_res_dpt IN ('075', '013', '059', '048', '023', '2A')",
        "b.ben_res_com < '010'",
        "b.ben_dcd_dte IS NOT NULL",
    ],
    aggregates: &[
        "count(*)",
        "count(DISTINCT b.ben_nir_psa)",
        "count(DISTINCT b.ben_nir_ano)",
        "avg(b.ben_nai_ann)",
        "min(b.ben_nai_ann)",
        "max(b.ben_nai_ann)",
    ],
};

const PRS: Pool = Pool {
    groupable: &[
        "p.prs_nat_ref",
        "p.pse_spe_cod",
        "date_part('year', p.exe_soi_dtd)",
        "p.ben_rng_gem",
        "p.prs_pai_mnt > 100",
    ],
    filters: &[
        "p.prs_nat_ref IN (1111, 1112, 3311)",
        "p.exe_soi_dtd >= DATE '2021-06-01'",
        "p.pse_spe_cod > 30",
        "p.prs_pai_mnt > 50",
        "p.bse_rem_mnt < 20",
    ],
    aggregates: &[
        "count(*)",
        "count(DISTINCT p.ben_nir_psa)",
        "count(DISTINCT p.prs_nat_ref)",
        "max(p.pse_spe_cod)",
    ],
};

const PHA: Pool = Pool {
    groupable: &[
        "substr(h.pha_atc_cla, 1, 1)",
        "h.pha_atc_cla",
        "date_part('year', h.exe_soi_dtd)",
    ],
    filters: &[
        "h.pha_atc_cla LIKE 'N%'",
        "h.pha_act_qsn > 1",
        "h.exe_soi_dtd < DATE '2020-01-01'",
    ],
    aggregates: &["count(*)", "count(DISTINCT h.ben_nir_psa)"],
};

const IMB: Pool = Pool {
    groupable: &["i.imb_ald_num", "substr(i.med_mtf_cod, 1, 1)"],
    filters: &["i.imb_ald_num IN (1, 5, 8, 30)", "i.med_mtf_cod LIKE 'C%'"],
    aggregates: &["count(i.imb_ald_num)", "count(DISTINCT i.med_mtf_cod)"],
};

const MCO_B: Pool = Pool {
    groupable: &[
        "substr(s.dgn_pal, 1, 1)",
        "s.age_ann / 20",
        "substr(s.grg_ghm, 3, 1)",
    ],
    filters: &["s.sej_nbj > 2", "s.dgn_pal LIKE 'C%'", "s.age_ann >= 60"],
    aggregates: &[
        "count(*)",
        "avg(s.age_ann)",
        "sum(s.age_ann)",
        "max(s.age_ann)",
    ],
};

const MCO_C: Pool = Pool {
    groupable: &[
        "date_part('year', c.exe_soi_dtd)",
        "substr(c.eta_num, 1, 2)",
    ],
    filters: &["c.exe_soi_dtd >= DATE '2022-01-01'"],
    aggregates: &["count(DISTINCT c.nir_ano_17)"],
};

const CIM: Pool = Pool {
    groupable: &["r.libelle", "substr(r.code, 1, 2)"],
    filters: &["r.libelle LIKE '%tumeur%'"],
    aggregates: &["count(DISTINCT r.code)"],
};

const PER_PERSON: Pool = Pool {
    groupable: &["q.n", "q.n / 10", "q.total > 500", "q.kinds"],
    filters: &["q.n > 3", "q.kinds >= 2"],
    aggregates: &["count(*)", "sum(q.n)", "avg(q.n)", "max(q.kinds)"],
};

const UNION: Pool = Pool {
    groupable: &["u.src", "date_part('year', u.exe_soi_dtd)"],
    filters: &["u.exe_soi_dtd >= DATE '2022-01-01'"],
    aggregates: &["count(*)", "count(DISTINCT u.ben_nir_psa)"],
};

const CTE: Pool = Pool {
    groupable: &["x.prs_nat_ref", "date_part('month', x.exe_soi_dtd)"],
    filters: &["x.prs_nat_ref <> 1111"],
    aggregates: &["count(*)"],
};

/// Where the rows come from, for seuil and for the oracle.
struct Source {
    /// `WITH ...` prefix, the same for both.
    with: String,
    /// The FROM clause seuil gets (the engine adds the person).
    seuil_from: String,
    /// The FROM clause of the oracle (the person joined by hand).
    raw_from: String,
    /// The person in the oracle.
    person: &'static str,
    /// Conditions both apply.
    conditions: Vec<String>,
    /// The column pools in scope.
    pools: Vec<&'static Pool>,
}

const PRS_TO_BEN: &str = "JOIN ir_ben_r pb__ ON p.ben_nir_psa = pb__.ben_nir_psa";

fn source<R: Rng>(rng: &mut R) -> Source {
    let plain = |seuil: &str, raw: &str, person: &'static str, pools: Vec<&'static Pool>| Source {
        with: String::new(),
        seuil_from: seuil.to_string(),
        raw_from: raw.to_string(),
        person,
        conditions: Vec::new(),
        pools,
    };
    match rng.random_range(0..13) {
        0 => plain("ir_ben_r b", "ir_ben_r b", "b.ben_nir_ano", vec![&BEN]),
        1 => plain(
            "er_prs_f p",
            &format!("er_prs_f p {PRS_TO_BEN}"),
            "pb__.ben_nir_ano",
            vec![&PRS],
        ),
        2 => {
            let join = "er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa";
            plain(join, join, "b.ben_nir_ano", vec![&PRS, &BEN])
        }
        3 => plain(
            "er_pha_f h",
            "er_pha_f h JOIN ir_ben_r hb__ ON h.ben_nir_psa = hb__.ben_nir_psa",
            "hb__.ben_nir_ano",
            vec![&PHA],
        ),
        4 => {
            let join = "ir_ben_r b JOIN er_pha_f h ON b.ben_nir_psa = h.ben_nir_psa";
            plain(join, join, "b.ben_nir_ano", vec![&PHA, &BEN])
        }
        5 => plain(
            "t_mco_b s",
            "t_mco_b s JOIN t_mco_c sc__ ON s.eta_num = sc__.eta_num AND s.rsa_num = sc__.rsa_num JOIN ir_ben_r sb__ ON sc__.nir_ano_17 = sb__.ben_nir_psa",
            "sb__.ben_nir_ano",
            vec![&MCO_B],
        ),
        6 => {
            let join = "t_mco_b s JOIN t_mco_c c ON s.eta_num = c.eta_num AND s.rsa_num = c.rsa_num JOIN ir_ben_r b ON c.nir_ano_17 = b.ben_nir_psa";
            plain(join, join, "b.ben_nir_ano", vec![&MCO_B, &MCO_C, &BEN])
        }
        7 => plain(
            "t_mco_b s JOIN ref_cim10 r ON s.dgn_pal = r.code",
            "t_mco_b s JOIN ref_cim10 r ON s.dgn_pal = r.code JOIN t_mco_c sc__ ON s.eta_num = sc__.eta_num AND s.rsa_num = sc__.rsa_num JOIN ir_ben_r sb__ ON sc__.nir_ano_17 = sb__.ben_nir_psa",
            "sb__.ben_nir_ano",
            vec![&MCO_B, &CIM],
        ),
        8 => {
            let join = "ir_ben_r b LEFT JOIN ir_imb_r i ON b.ben_nir_psa = i.ben_nir_psa";
            plain(join, join, "b.ben_nir_ano", vec![&BEN, &IMB])
        }
        9 => {
            let filter = if rng.random_bool(0.5) {
                " WHERE prs_nat_ref IN (1111, 1112)"
            } else {
                ""
            };
            let inner = format!(
                "(SELECT ben_nir_psa, count(*) AS n, sum(prs_pai_mnt) AS total, count(DISTINCT prs_nat_ref) AS kinds FROM er_prs_f{filter} GROUP BY ben_nir_psa) q"
            );
            plain(
                &inner,
                &format!("{inner} JOIN ir_ben_r qb__ ON q.ben_nir_psa = qb__.ben_nir_psa"),
                "qb__.ben_nir_ano",
                vec![&PER_PERSON],
            )
        }
        10 => {
            let inner = "(SELECT ben_nir_psa, exe_soi_dtd, 'prs' AS src FROM er_prs_f UNION ALL SELECT ben_nir_psa, exe_soi_dtd, 'pha' AS src FROM er_pha_f) u";
            plain(
                inner,
                &format!("{inner} JOIN ir_ben_r ub__ ON u.ben_nir_psa = ub__.ben_nir_psa"),
                "ub__.ben_nir_ano",
                vec![&UNION],
            )
        }
        11 => {
            let ald = [1, 5, 8, 30, 23].choose(rng).copied().unwrap_or(30);
            let mut source = plain("ir_ben_r b", "ir_ben_r b", "b.ben_nir_ano", vec![&BEN]);
            source.conditions.push(format!(
                "b.ben_nir_psa IN (SELECT ben_nir_psa FROM ir_imb_r WHERE imb_ald_num = {ald})"
            ));
            source
        }
        _ => {
            let with = "WITH x AS (SELECT ben_nir_psa, prs_nat_ref, exe_soi_dtd FROM er_prs_f WHERE exe_soi_dtd < DATE '2021-01-01') ".to_string();
            let join = "x JOIN ir_ben_r b ON x.ben_nir_psa = b.ben_nir_psa";
            Source {
                with,
                seuil_from: join.into(),
                raw_from: join.into(),
                person: "b.ben_nir_ano",
                conditions: Vec::new(),
                pools: vec![&CTE, &BEN],
            }
        }
    }
}

fn pick<'a, R: Rng>(rng: &mut R, items: &[&'a str], count: usize) -> Vec<&'a str> {
    let mut chosen: Vec<&str> = Vec::new();
    for _ in 0..count * 4 {
        if chosen.len() == count {
            break;
        }
        if let Some(item) = items.choose(rng)
            && !chosen.contains(item)
        {
            chosen.push(item);
        }
    }
    chosen
}

/// One random query and its oracle.
pub fn generate<R: Rng>(rng: &mut R) -> GeneratedQuery {
    let source = source(rng);
    let groupable: Vec<&str> = source
        .pools
        .iter()
        .flat_map(|p| p.groupable.iter().copied())
        .collect();
    let filters: Vec<&str> = source
        .pools
        .iter()
        .flat_map(|p| p.filters.iter().copied())
        .collect();
    let aggregates: Vec<&str> = source
        .pools
        .iter()
        .flat_map(|p| p.aggregates.iter().copied())
        .collect();

    let group_count = rng.random_range(0..=3usize);
    let groups = pick(rng, &groupable, group_count);
    let aggregate_count = rng.random_range(1..=3usize);
    let chosen_aggregates = pick(rng, &aggregates, aggregate_count);
    let filter_count = rng.random_range(0..=2usize);
    let mut conditions: Vec<String> = pick(rng, &filters, filter_count)
        .into_iter()
        .map(String::from)
        .collect();
    conditions.extend(source.conditions.iter().cloned());

    let select: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{g} AS g{i}"))
        .chain(
            chosen_aggregates
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{a} AS a{i}")),
        )
        .collect();
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let group_clause = if groups.is_empty() {
        String::new()
    } else {
        format!(
            " GROUP BY {}",
            (1..=groups.len())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let having = if rng.random_bool(0.2) {
        format!(" HAVING count(*) > {}", rng.random_range(5..60))
    } else {
        String::new()
    };
    let seuil_sql = format!(
        "{}SELECT {} FROM {}{where_clause}{group_clause}{having}",
        source.with,
        select.join(", "),
        source.seuil_from
    );
    let raw_sql = format!(
        "{}SELECT {}, count(DISTINCT {}) AS persons__ FROM {}{where_clause}{group_clause}{having}",
        source.with,
        select.join(", "),
        source.person,
        source.raw_from
    );
    GeneratedQuery {
        seuil_sql,
        raw_sql,
        group_columns: groups.len(),
    }
}
