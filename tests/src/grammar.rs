//! Random statistician (and attacker) queries over the synthetic SNDS, each
//! with what seuil must do with it: release cells that the reference
//! implementation ([`crate::reference`]) can check against the raw data,
//! refuse it under a given rule, refuse it as past a limit, or at least
//! never fail on the data.
//!
//! The grammar covers the shapes of DESIGN.md §2 rule 3 (tables that reach
//! the person through one or two links, user-written joins on the person,
//! outer joins, joins with code lists, per-person subqueries, CTEs, UNION ALL
//! and IN subqueries), with filters and one to three group keys, and the
//! released values of rules 2 and 6: `COUNT(*)`, `COUNT(col)` of mostly-NULL
//! columns, person counts, sums and averages of plain and sensitive columns,
//! `MIN`, `MAX` and `MEDIAN` of every column class, each with a `FILTER`, a
//! `CASE` around its argument, or neither. It also writes tables with
//! margins (`ROLLUP`, `CUBE`, `GROUPING SETS` up to the cap and past it,
//! `UNION ALL` of a total and its breakdown), identifiers inside
//! expressions in every position, `COUNT(DISTINCT)` of values, and
//! failing functions under a `CASE` that decides per row whether they run.

use rand::Rng;
use rand::seq::IndexedRandom;

/// What seuil must do with a generated query.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Answer it; the released cells are checked against the oracle.
    Cells(Oracle),
    /// Refuse it under this rule (its stable code).
    Refused(&'static str),
    /// Refuse it as past a limit, before running it.
    Limit,
    /// Answer or refuse it, but never fail while running.
    NoRuntimeError,
}

/// A generated query.
#[derive(Debug, Clone)]
pub struct GeneratedQuery {
    /// The query as a user sends it to seuil.
    pub sql: String,
    /// What seuil must do with it.
    pub expect: Expect,
    /// Number of key columns of its result (the part tag of a UNION ALL,
    /// then the group columns).
    pub group_columns: usize,
}

/// The released values of a query, as the reference computes them: one
/// part per released aggregate (the branches of a UNION ALL).
#[derive(Debug, Clone)]
pub struct Oracle {
    /// The released aggregates.
    pub parts: Vec<Part>,
}

/// One released aggregate.
#[derive(Debug, Clone)]
pub struct Part {
    /// The constant first column that tells UNION ALL branches apart.
    pub tag: Option<&'static str>,
    /// `WITH ...` prefix.
    pub with: String,
    /// The FROM clause on raw data, with the person joined in by hand.
    pub raw_from: String,
    /// The person in the raw FROM clause.
    pub person: &'static str,
    /// The WHERE conditions.
    pub conditions: Vec<String>,
    /// The distinct group expressions.
    pub groups: Vec<String>,
    /// Output group columns of the part (a branch of a UNION ALL pads with
    /// NULLs up to the widest branch).
    pub output_groups: usize,
    /// The grouping sets, as positions in `groups`; `None` for a plain
    /// GROUP BY of all of them.
    pub sets: Option<Vec<Vec<usize>>>,
    /// The released values.
    pub values: Vec<ValueSpec>,
    /// `HAVING count(*) > n`.
    pub having_rows_over: Option<i64>,
}

impl Part {
    /// True when the part's cells form a table with margins.
    pub fn has_margins(&self) -> bool {
        self.sets.is_some()
    }
}

/// What a released value computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `count(*)`.
    CountRows,
    /// `count(x)`.
    Count,
    /// `count(DISTINCT person key)`.
    CountPersons,
    /// `sum(x)` of a plain column.
    Sum,
    /// `avg(x)` of a plain column.
    Avg,
    /// `sum(x)` of a sensitive column with these bounds.
    SensitiveSum(f64, f64),
    /// `avg(x)` of a sensitive column with these bounds.
    SensitiveAvg(f64, f64),
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `median(x)` of a DOUBLE.
    Median,
}

impl Kind {
    /// True when a total is the sum of its cells.
    pub fn is_additive(self) -> bool {
        matches!(
            self,
            Kind::CountRows | Kind::Count | Kind::Sum | Kind::SensitiveSum(..)
        )
    }

    /// True when its per-person contributions are clamped.
    pub fn bounds(self) -> Option<(f64, f64)> {
        match self {
            Kind::SensitiveSum(lo, hi) | Kind::SensitiveAvg(lo, hi) => Some((lo, hi)),
            _ => None,
        }
    }
}

/// One released value: its kind, argument and filter, in raw SQL.
#[derive(Debug, Clone)]
pub struct ValueSpec {
    /// What it computes.
    pub kind: Kind,
    /// Its argument (`1` for `count(*)`).
    pub argument: String,
    /// Its FILTER condition.
    pub filter: Option<String>,
}

impl ValueSpec {
    /// The rows that contribute to it, in raw SQL (rule 2 read per value).
    pub fn contributes(&self) -> String {
        let filter = self.filter.clone().unwrap_or_else(|| "true".into());
        match self.kind {
            Kind::CountRows => format!("({filter})"),
            Kind::Count | Kind::CountPersons | Kind::Min | Kind::Max | Kind::Median => {
                format!("({filter}) AND ({}) IS NOT NULL", self.argument)
            }
            _ => format!(
                "({filter}) AND ({arg}) IS NOT NULL AND ({arg}) <> 0",
                arg = self.argument
            ),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Class {
    /// A number that is not sensitive.
    Number,
    /// A date.
    Date,
    /// Text.
    Text,
    /// A sensitive amount with bounds.
    Sensitive(f64, f64),
    /// An identifier that is a person key (counting it counts persons).
    PersonKey,
}

#[derive(Clone, Copy)]
struct Col {
    expr: &'static str,
    class: Class,
}

const fn c(expr: &'static str, class: Class) -> Col {
    Col { expr, class }
}

/// Column expressions of one table alias.
struct Pool {
    /// Expressions that may be grouped on, and whether they serve as
    /// dimensions of tables with margins: never NULL (so that NULL marks a
    /// margin) and of few values (so that the attacker's linear programs
    /// stay small).
    groupable: &'static [(&'static str, bool)],
    /// Conditions that may filter rows or values.
    filters: &'static [&'static str],
    /// Columns whose values may be aggregated.
    columns: &'static [Col],
    /// Identifiers, for the attacker's expressions.
    identifiers: &'static [&'static str],
}

const BEN: Pool = Pool {
    groupable: &[
        ("b.ben_sex_cod", true),
        ("b.ben_res_dpt", false),
        ("b.ben_nai_ann / 10 * 10", true),
        ("b.ben_rng_gem", true),
        ("b.ben_dcd_dte IS NULL", true),
        ("substr(b.ben_res_dpt, 1, 2)", false),
        (
            "CASE WHEN b.ben_nai_ann < 1960 THEN 'old' ELSE 'young' END",
            true,
        ),
    ],
    filters: &[
        "b.ben_sex_cod = 1",
        "b.ben_sex_cod = 2",
        "b.ben_nai_ann BETWEEN 1940 AND 1970",
        "b.ben_nai_ann >= 1990",
        "b.ben_res_dpt IN ('075', '013', '059', '048', '023', '2A')",
        "b.ben_res_com < '010'",
        "b.ben_dcd_dte IS NOT NULL",
        "b.ben_nai_ann = 1931 AND b.ben_sex_cod = 2",
        "b.ben_res_dpt = '048'",
    ],
    columns: &[
        c("b.ben_nai_ann", Class::Number),
        c("b.ben_sex_cod", Class::Number),
        c("b.ben_rng_gem", Class::Number),
        c("b.ben_dcd_dte", Class::Date),
        c("b.ben_res_dpt", Class::Text),
        c("b.ben_res_com", Class::Text),
        c("b.ben_nir_psa", Class::PersonKey),
        c("b.ben_nir_ano", Class::PersonKey),
    ],
    identifiers: &["b.ben_nir_psa", "b.ben_nir_ano"],
};

const PRS: Pool = Pool {
    groupable: &[
        ("p.prs_nat_ref", false),
        ("p.pse_spe_cod", false),
        ("date_part('year', p.exe_soi_dtd)", true),
        ("p.ben_rng_gem", true),
        ("p.prs_pai_mnt > 100", true),
    ],
    filters: &[
        "p.prs_nat_ref IN (1111, 1112, 3311)",
        "p.exe_soi_dtd >= DATE '2021-06-01'",
        "p.pse_spe_cod > 30",
        "p.prs_pai_mnt > 50",
        "p.bse_rem_mnt < 20",
        "p.prs_pai_mnt > 3000",
    ],
    columns: &[
        c("p.prs_pai_mnt", Class::Sensitive(0.0, 20000.0)),
        c("p.bse_rem_mnt", Class::Sensitive(0.0, 20000.0)),
        c("p.pse_spe_cod", Class::Number),
        c("p.prs_nat_ref", Class::Number),
        c("p.exe_soi_dtd", Class::Date),
        c("p.ben_nir_psa", Class::PersonKey),
    ],
    identifiers: &["p.ben_nir_psa"],
};

const PHA: Pool = Pool {
    groupable: &[
        ("substr(h.pha_atc_cla, 1, 1)", true),
        ("h.pha_atc_cla", false),
        ("date_part('year', h.exe_soi_dtd)", true),
    ],
    filters: &[
        "h.pha_atc_cla LIKE 'N%'",
        "h.pha_act_qsn > 1",
        "h.exe_soi_dtd < DATE '2020-01-01'",
    ],
    columns: &[
        c("h.pha_act_qsn", Class::Sensitive(0.0, 500.0)),
        c("h.pha_atc_cla", Class::Text),
        c("h.exe_soi_dtd", Class::Date),
        c("h.ben_nir_psa", Class::PersonKey),
    ],
    identifiers: &["h.ben_nir_psa"],
};

const IMB: Pool = Pool {
    groupable: &[
        ("i.imb_ald_num", false),
        ("substr(i.med_mtf_cod, 1, 1)", false),
    ],
    filters: &["i.imb_ald_num IN (1, 5, 8, 30)", "i.med_mtf_cod LIKE 'C%'"],
    columns: &[
        c("i.imb_ald_num", Class::Number),
        c("i.med_mtf_cod", Class::Text),
        c("i.imb_ald_dtd", Class::Date),
    ],
    identifiers: &[],
};

const MCO_B: Pool = Pool {
    groupable: &[
        ("substr(s.dgn_pal, 1, 1)", true),
        ("s.age_ann / 20", true),
        ("substr(s.grg_ghm, 3, 1)", true),
    ],
    filters: &["s.sej_nbj > 2", "s.dgn_pal LIKE 'C%'", "s.age_ann >= 60"],
    columns: &[
        c("s.sej_nbj", Class::Sensitive(0.0, 365.0)),
        c("s.age_ann", Class::Number),
        c("s.dgn_pal", Class::Text),
    ],
    identifiers: &["s.rsa_num"],
};

const MCO_C: Pool = Pool {
    groupable: &[
        ("date_part('year', c.exe_soi_dtd)", true),
        ("substr(c.eta_num, 1, 2)", true),
    ],
    filters: &["c.exe_soi_dtd >= DATE '2022-01-01'"],
    columns: &[
        c("c.exe_soi_dtd", Class::Date),
        c("c.nir_ano_17", Class::PersonKey),
    ],
    identifiers: &["c.nir_ano_17", "c.rsa_num"],
};

const CIM: Pool = Pool {
    groupable: &[("r.libelle", false), ("substr(r.code, 1, 2)", false)],
    filters: &["r.libelle LIKE '%tumeur%'"],
    columns: &[c("r.code", Class::Text)],
    identifiers: &[],
};

const PER_PERSON: Pool = Pool {
    groupable: &[
        ("q.n", false),
        ("q.n / 10", true),
        ("q.total > 500", true),
        ("q.kinds", false),
    ],
    filters: &["q.n > 3", "q.kinds >= 2"],
    columns: &[
        c("q.n", Class::Number),
        c("q.kinds", Class::Number),
        c("q.total", Class::Sensitive(0.0, 20000.0)),
        c("q.ben_nir_psa", Class::PersonKey),
    ],
    identifiers: &["q.ben_nir_psa"],
};

const UNION: Pool = Pool {
    groupable: &[("u.src", true), ("date_part('year', u.exe_soi_dtd)", true)],
    filters: &["u.exe_soi_dtd >= DATE '2022-01-01'"],
    columns: &[
        c("u.exe_soi_dtd", Class::Date),
        c("u.ben_nir_psa", Class::PersonKey),
    ],
    identifiers: &["u.ben_nir_psa"],
};

const CTE: Pool = Pool {
    groupable: &[
        ("x.prs_nat_ref", false),
        ("date_part('month', x.exe_soi_dtd)", true),
    ],
    filters: &["x.prs_nat_ref <> 1111"],
    columns: &[
        c("x.prs_nat_ref", Class::Number),
        c("x.exe_soi_dtd", Class::Date),
        c("x.ben_nir_psa", Class::PersonKey),
    ],
    identifiers: &["x.ben_nir_psa"],
};

/// Where the rows come from, for seuil and for the oracle.
struct Source {
    with: String,
    seuil_from: String,
    raw_from: String,
    person: &'static str,
    conditions: Vec<String>,
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

/// The sensitive columns of the pools.
const SENSITIVE: &[&str] = &[
    "p.prs_pai_mnt",
    "p.bse_rem_mnt",
    "h.pha_act_qsn",
    "s.sej_nbj",
    "q.total",
];

/// One generated value: its SQL, its spec, or the rule that refuses it.
enum GeneratedValue {
    Released(String, ValueSpec),
    Refused(String, &'static str),
}

/// A released value over the columns in scope.
fn value<R: Rng>(rng: &mut R, columns: &[Col], filters: &[&str]) -> GeneratedValue {
    let condition = filters.choose(rng).copied().unwrap_or("true").to_string();
    if rng.random_bool(0.2) {
        // count(*), with a FILTER half of the time.
        return if rng.random_bool(0.5) {
            GeneratedValue::Released(
                format!("count(*) FILTER (WHERE {condition})"),
                ValueSpec {
                    kind: Kind::CountRows,
                    argument: "1".into(),
                    filter: Some(condition),
                },
            )
        } else {
            GeneratedValue::Released(
                "count(*)".into(),
                ValueSpec {
                    kind: Kind::CountRows,
                    argument: "1".into(),
                    filter: None,
                },
            )
        };
    }
    let Some(column) = columns.choose(rng).copied() else {
        return GeneratedValue::Refused("count(DISTINCT 1)".into(), "min_persons");
    };
    let numeric = matches!(column.class, Class::Number | Class::Sensitive(..));
    let function = match column.class {
        Class::PersonKey => *["count_distinct", "count", "max"]
            .choose(rng)
            .unwrap_or(&"count"),
        Class::Date | Class::Text => *["count", "min", "max", "count_distinct"]
            .choose(rng)
            .unwrap_or(&"count"),
        _ => *[
            "count",
            "sum",
            "avg",
            "min",
            "max",
            "median",
            "count_distinct",
        ]
        .choose(rng)
        .unwrap_or(&"sum"),
    };
    // How the value is restricted: a FILTER, a CASE around the argument
    // (NULL elsewhere, or 0 elsewhere for sums), or not at all.
    let wrap = rng.random_range(0..4);
    let (argument, filter, filter_sql) = match wrap {
        0 => (
            column.expr.to_string(),
            Some(condition.clone()),
            format!(" FILTER (WHERE {condition})"),
        ),
        1 => (
            format!("CASE WHEN {condition} THEN {} END", column.expr),
            None,
            String::new(),
        ),
        2 if numeric && matches!(function, "sum" | "avg") => (
            format!("CASE WHEN {condition} THEN {} ELSE 0 END", column.expr),
            None,
            String::new(),
        ),
        _ => (column.expr.to_string(), None, String::new()),
    };
    let wrapped = argument != column.expr;
    // A CASE that reads a sensitive column makes its value a magnitude
    // without bounds, even when the value itself is not sensitive.
    let sensitive_case = wrapped
        && SENSITIVE
            .iter()
            .any(|sensitive| condition.contains(sensitive));
    let call = |name: &str, argument: &str| format!("{name}({argument}){filter_sql}");
    let released = |kind: Kind, sql: String, argument: String| {
        GeneratedValue::Released(
            sql,
            ValueSpec {
                kind,
                argument,
                filter: filter.clone(),
            },
        )
    };
    match (function, column.class) {
        ("count", Class::PersonKey) if wrapped => {
            GeneratedValue::Refused(call("count", &argument), "identifiers")
        }
        ("count", _) => released(Kind::Count, call("count", &argument), argument),
        ("count_distinct", Class::PersonKey) if !wrapped => released(
            Kind::CountPersons,
            format!("count(DISTINCT {argument}){filter_sql}"),
            argument,
        ),
        ("count_distinct", Class::PersonKey) => GeneratedValue::Refused(
            format!("count(DISTINCT {argument}){filter_sql}"),
            "identifiers",
        ),
        ("count_distinct", _) => GeneratedValue::Refused(
            format!("count(DISTINCT {argument}){filter_sql}"),
            "min_persons",
        ),
        ("max", Class::PersonKey) => GeneratedValue::Refused(call("max", &argument), "identifiers"),
        ("sum" | "avg", Class::Sensitive(..)) if wrapped => {
            GeneratedValue::Refused(call(function, &argument), "magnitudes")
        }
        ("sum" | "avg", _) if sensitive_case => {
            GeneratedValue::Refused(call(function, &argument), "magnitudes")
        }
        ("sum", Class::Sensitive(lo, hi)) => {
            released(Kind::SensitiveSum(lo, hi), call("sum", &argument), argument)
        }
        ("avg", Class::Sensitive(lo, hi)) => {
            released(Kind::SensitiveAvg(lo, hi), call("avg", &argument), argument)
        }
        ("sum", _) => released(Kind::Sum, call("sum", &argument), argument),
        ("avg", _) => released(Kind::Avg, call("avg", &argument), argument),
        ("min", _) => released(Kind::Min, call("min", &argument), argument),
        ("max", _) => released(Kind::Max, call("max", &argument), argument),
        _ => {
            let argument = format!("CAST({argument} AS DOUBLE)");
            released(Kind::Median, call("median", &argument), argument)
        }
    }
}

/// An identifier inside an expression, somewhere in a query: refused by
/// rule 4 wherever it is.
fn poisoned<R: Rng>(rng: &mut R, identifier: &str) -> (Poison, String) {
    let expr = match rng.random_range(0..6) {
        0 => format!("lower({identifier})"),
        1 => format!("substr({identifier}, 1, 4)"),
        2 => format!("{identifier} || ''"),
        3 => format!("concat({identifier}, '')"),
        4 => format!("trim({identifier})"),
        _ => format!("CAST({identifier} AS BIGINT)"),
    };
    let place = match rng.random_range(0..4) {
        0 => Poison::GroupKey,
        1 => Poison::Condition,
        2 => Poison::CountDistinct,
        _ => Poison::Comparison,
    };
    (place, expr)
}

#[derive(Clone, Copy)]
enum Poison {
    GroupKey,
    Condition,
    CountDistinct,
    Comparison,
}

/// Failing functions and operators, each under a CASE that runs them for
/// the rows of one rare condition only.
const FAILING: &[&str] = &[
    "abs(CAST(-32768 AS SMALLINT)) = 1",
    "abs(CAST(b.ben_nai_ann - 34768 AS SMALLINT)) > 0",
    "b.ben_nai_ann * 2000000000 > 1",
    "substr(b.ben_res_com, 1, -1) = ''",
    "substr(b.ben_res_com, -9223372036854775807 - 1, 2) = ''",
    "split_part(b.ben_res_com, '0', 0) = ''",
    "b.ben_dcd_dte + INTERVAL '1000000000 days' > DATE '2000-01-01'",
    "date_trunc('year', CAST(b.ben_dcd_dte AS TIMESTAMP) + INTERVAL '300 years') IS NULL",
    "lpad(b.ben_res_com, 2147483647) = 'x'",
    "rpad(b.ben_res_com, 2000000000, 'ab') = 'x'",
    "sqrt(b.ben_nai_ann - 3000) > 1",
    "CAST(b.ben_res_com AS INT) / (b.ben_nai_ann - b.ben_nai_ann) > 1",
    "(b.ben_nai_ann - 1000 - 9223372036854775807 - 1) / -1 > 0",
    "ln(b.ben_nai_ann - 5000) > 0",
    "round(b.ben_nai_ann, -5) > 0",
    "CAST(CAST(b.ben_dcd_dte AS TIMESTAMP) AS DATE) IS NULL",
    "length(repeat(b.ben_res_com, 1000000000)) > 0",
    "length(replace(b.ben_res_com, '0', lpad('x', 100, 'y'))) > 0",
];

/// One random query and what seuil must do with it.
pub fn generate<R: Rng>(rng: &mut R) -> GeneratedQuery {
    let source = source(rng);
    let groupable: Vec<(&str, bool)> = source
        .pools
        .iter()
        .flat_map(|p| p.groupable.iter().copied())
        .collect();
    let filters: Vec<&str> = source
        .pools
        .iter()
        .flat_map(|p| p.filters.iter().copied())
        .collect();
    let columns: Vec<Col> = source
        .pools
        .iter()
        .flat_map(|p| p.columns.iter().copied())
        .collect();
    let identifiers: Vec<&str> = source
        .pools
        .iter()
        .flat_map(|p| p.identifiers.iter().copied())
        .collect();
    let shape = rng.random_range(0..100);
    let dimensions = groupable.iter().filter(|(_, dimension)| *dimension).count();
    let margins = shape < 15 && dimensions >= 2;
    let union = (15..22).contains(&shape) && dimensions >= 2;
    let probe = (22..27).contains(&shape) && source.pools.iter().any(|p| std::ptr::eq(*p, &BEN));
    let poison = (27..35).contains(&shape) && !identifiers.is_empty();

    let group_pool: Vec<&str> = groupable
        .iter()
        .filter(|(_, nonnull)| *nonnull || !(margins || union))
        .map(|(g, _)| *g)
        .collect();
    let group_count = if margins || union {
        rng.random_range(2..=3usize).min(group_pool.len())
    } else {
        rng.random_range(0..=3usize)
    };
    let mut groups: Vec<String> = pick(rng, &group_pool, group_count)
        .into_iter()
        .map(String::from)
        .collect();
    let value_count = rng.random_range(1..=3usize);
    let mut value_sql = Vec::new();
    let mut specs = Vec::new();
    let mut refused: Option<&'static str> = None;
    for _ in 0..value_count {
        match value(rng, &columns, &filters) {
            GeneratedValue::Released(sql, spec) => {
                // Person counts of margins mix persons across finest cells.
                if (margins || union) && spec.kind == Kind::CountPersons || value_sql.contains(&sql)
                {
                    continue;
                }
                value_sql.push(sql);
                specs.push(spec);
            }
            GeneratedValue::Refused(sql, rule) => {
                if refused.is_none() && !(margins || union || probe || poison) {
                    refused = Some(rule);
                    value_sql.push(sql);
                }
            }
        }
    }
    if value_sql.is_empty() {
        value_sql.push("count(*)".into());
        specs.push(ValueSpec {
            kind: Kind::CountRows,
            argument: "1".into(),
            filter: None,
        });
    }
    let filter_count = rng.random_range(0..=2usize);
    let mut conditions: Vec<String> = pick(rng, &filters, filter_count)
        .into_iter()
        .map(String::from)
        .collect();
    conditions.extend(source.conditions.iter().cloned());

    let mut expect_refused = refused;
    if poison {
        let identifier = identifiers.choose(rng).copied().unwrap_or("b.ben_nir_psa");
        let (place, expr) = poisoned(rng, identifier);
        match place {
            Poison::GroupKey => groups.push(expr),
            Poison::Condition => conditions.push(format!("{expr} IS NOT NULL")),
            // (DataFusion names `count(DISTINCT CAST(x AS ...))` like
            // `count(DISTINCT x)`, and two such columns clash before seuil
            // sees the query: no cast there.)
            Poison::CountDistinct if expr.starts_with("CAST(") => {
                value_sql.push(format!("count(DISTINCT lower({identifier}))"))
            }
            Poison::CountDistinct => value_sql.push(format!("count(DISTINCT {expr})")),
            Poison::Comparison => conditions.push(format!("{identifier} > '8'")),
        }
        expect_refused = Some("identifiers");
    }
    if probe {
        let failing = FAILING.choose(rng).copied().unwrap_or(FAILING[0]);
        let rare = "b.ben_nai_ann = 1931 AND b.ben_res_dpt = '048'";
        conditions.push(format!("CASE WHEN {rare} THEN {failing} ELSE true END"));
    }

    let with = source.with.clone();
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };

    if union {
        return union_of_levels(
            &source,
            &groups,
            &value_sql,
            &specs,
            &where_clause,
            &conditions,
        );
    }

    let select: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{g} AS g{i}"))
        .chain(
            value_sql
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{a} AS a{i}")),
        )
        .collect();
    let (group_clause, sets, limit) = if margins {
        grouping_clause(rng, &groups)
    } else if groups.is_empty() {
        (String::new(), None, false)
    } else {
        (
            format!(
                " GROUP BY {}",
                (1..=groups.len())
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None,
            false,
        )
    };
    let having = if !margins && rng.random_bool(0.15) {
        Some(rng.random_range(5..60))
    } else {
        None
    };
    let having_sql = having.map_or(String::new(), |n| format!(" HAVING count(*) > {n}"));
    let sql = format!(
        "{with}SELECT {} FROM {}{where_clause}{group_clause}{having_sql}",
        select.join(", "),
        source.seuil_from
    );
    let expect = if let Some(rule) = expect_refused {
        Expect::Refused(rule)
    } else if limit {
        Expect::Limit
    } else if probe {
        Expect::NoRuntimeError
    } else {
        Expect::Cells(Oracle {
            parts: vec![Part {
                tag: None,
                with,
                raw_from: source.raw_from.clone(),
                person: source.person,
                conditions,
                output_groups: groups.len(),
                groups,
                sets,
                values: specs,
                having_rows_over: having,
            }],
        })
    };
    GeneratedQuery {
        sql,
        expect,
        group_columns: select.len() - value_sql.len(),
    }
}

/// A ROLLUP, CUBE or GROUPING SETS clause over `groups`, the sets it makes,
/// and whether it is past the cap on grouping sets.
fn grouping_clause<R: Rng>(
    rng: &mut R,
    groups: &[String],
) -> (String, Option<Vec<Vec<usize>>>, bool) {
    let n = groups.len();
    let list = groups.join(", ");
    match rng.random_range(0..10) {
        0..=2 => (
            format!(" GROUP BY ROLLUP({list})"),
            Some((0..=n).rev().map(|k| (0..k).collect()).collect()),
            false,
        ),
        3..=5 => (
            format!(" GROUP BY CUBE({list})"),
            Some(
                (0..(1usize << n))
                    .map(|mask| (0..n).filter(|i| mask & (1 << (n - 1 - i)) == 0).collect())
                    .collect(),
            ),
            false,
        ),
        6 => {
            // Past the cap: more grouping sets than allowed, refused before
            // anything expands them. The sets are written out, each a
            // different constant shift of the first dimension.
            let sets: Vec<String> = (0..300)
                .map(|i| format!("({list}, CAST({i} AS BIGINT))"))
                .collect();
            (
                format!(" GROUP BY GROUPING SETS ({})", sets.join(", ")),
                None,
                true,
            )
        }
        _ => {
            // Breakdowns that neither contains: each dimension alone, and
            // sometimes the grand total.
            let mut sets: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
            if rng.random_bool(0.5) {
                sets.push(Vec::new());
            }
            let text: Vec<String> = sets
                .iter()
                .map(|set| {
                    format!(
                        "({})",
                        set.iter()
                            .map(|&i| groups[i].as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect();
            (
                format!(" GROUP BY GROUPING SETS ({})", text.join(", ")),
                Some(sets),
                false,
            )
        }
    }
}

/// A UNION ALL of a total and its breakdown: the same values over the same
/// rows, grouped by the first group key, then by all of them.
fn union_of_levels(
    source: &Source,
    groups: &[String],
    value_sql: &[String],
    specs: &[ValueSpec],
    where_clause: &str,
    conditions: &[String],
) -> GeneratedQuery {
    let width = groups.len();
    let branch = |tag: &str, kept: usize| {
        let keys: Vec<String> = (0..width)
            .map(|i| {
                if i < kept {
                    format!("{} AS g{i}", groups[i])
                } else {
                    format!("NULL AS g{i}")
                }
            })
            .collect();
        let values: Vec<String> = value_sql
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{v} AS a{i}"))
            .collect();
        format!(
            "SELECT '{tag}' AS part, {}, {} FROM {}{where_clause} GROUP BY {}",
            keys.join(", "),
            values.join(", "),
            source.seuil_from,
            (2..kept + 2)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let sql = format!(
        "{}{} UNION ALL {}",
        source.with,
        branch("total", 1),
        branch("breakdown", width)
    );
    let part = |tag: &'static str, kept: usize| Part {
        tag: Some(tag),
        with: source.with.clone(),
        raw_from: source.raw_from.clone(),
        person: source.person,
        conditions: conditions.to_vec(),
        groups: groups[..kept].to_vec(),
        output_groups: width,
        sets: None,
        values: specs.to_vec(),
        having_rows_over: None,
    };
    let expect = if value_sql.len() == specs.len() {
        Expect::Cells(Oracle {
            parts: vec![part("total", 1), part("breakdown", width)],
        })
    } else {
        Expect::NoRuntimeError
    };
    GeneratedQuery {
        sql,
        expect,
        group_columns: width + 1,
    }
}
