//! The 101 French départements: INSEE code, name, region, population and commune count.
//!
//! Populations are the INSEE municipal populations of 2021 in thousands and commune counts those
//! of 2023, both rounded; they only need to give the generator a realistic skew (Paris, Nord and
//! Bouches-du-Rhône large, Lozère and Creuse tiny), not census accuracy.

/// One département of the reference list.
#[derive(Debug, Clone, Copy)]
pub struct Departement {
    /// Code as stored in `ben_res_dpt` and `ref_dpt.code`: three characters, `"075"`, `"02A"`, `"971"`.
    pub code: &'static str,
    /// French name.
    pub name: &'static str,
    /// Region (2016 boundaries).
    pub region: &'static str,
    /// Population in thousands.
    pub population_k: u32,
    /// Number of communes (for Paris, its 20 arrondissements).
    pub communes: u16,
}

const ARA: &str = "Auvergne-Rhône-Alpes";
const BFC: &str = "Bourgogne-Franche-Comté";
const BRE: &str = "Bretagne";
const CVL: &str = "Centre-Val de Loire";
const COR: &str = "Corse";
const GES: &str = "Grand Est";
const HDF: &str = "Hauts-de-France";
const IDF: &str = "Île-de-France";
const NOR: &str = "Normandie";
const NAQ: &str = "Nouvelle-Aquitaine";
const OCC: &str = "Occitanie";
const PDL: &str = "Pays de la Loire";
const PAC: &str = "Provence-Alpes-Côte d'Azur";

const fn d(
    code: &'static str,
    name: &'static str,
    region: &'static str,
    population_k: u32,
    communes: u16,
) -> Departement {
    Departement {
        code,
        name,
        region,
        population_k,
        communes,
    }
}

/// All 101 départements, metropolitan ones in code order, then the five overseas ones.
pub const DEPARTEMENTS: [Departement; 101] = [
    d("001", "Ain", ARA, 657, 393),
    d("002", "Aisne", HDF, 529, 798),
    d("003", "Allier", ARA, 335, 317),
    d("004", "Alpes-de-Haute-Provence", PAC, 165, 198),
    d("005", "Hautes-Alpes", PAC, 141, 162),
    d("006", "Alpes-Maritimes", PAC, 1098, 163),
    d("007", "Ardèche", ARA, 329, 335),
    d("008", "Ardennes", GES, 270, 449),
    d("009", "Ariège", OCC, 154, 327),
    d("010", "Aube", GES, 310, 431),
    d("011", "Aude", OCC, 375, 433),
    d("012", "Aveyron", OCC, 279, 285),
    d("013", "Bouches-du-Rhône", PAC, 2043, 119),
    d("014", "Calvados", NOR, 697, 528),
    d("015", "Cantal", ARA, 144, 246),
    d("016", "Charente", NAQ, 351, 364),
    d("017", "Charente-Maritime", NAQ, 655, 463),
    d("018", "Cher", CVL, 300, 287),
    d("019", "Corrèze", NAQ, 240, 279),
    d("02A", "Corse-du-Sud", COR, 160, 124),
    d("02B", "Haute-Corse", COR, 182, 236),
    d("021", "Côte-d'Or", BFC, 535, 698),
    d("022", "Côtes-d'Armor", BRE, 603, 348),
    d("023", "Creuse", NAQ, 115, 256),
    d("024", "Dordogne", NAQ, 413, 503),
    d("025", "Doubs", BFC, 545, 571),
    d("026", "Drôme", ARA, 520, 363),
    d("027", "Eure", NOR, 600, 585),
    d("028", "Eure-et-Loir", CVL, 431, 365),
    d("029", "Finistère", BRE, 918, 277),
    d("030", "Gard", OCC, 752, 351),
    d("031", "Haute-Garonne", OCC, 1435, 586),
    d("032", "Gers", OCC, 191, 461),
    d("033", "Gironde", NAQ, 1657, 535),
    d("034", "Hérault", OCC, 1210, 342),
    d("035", "Ille-et-Vilaine", BRE, 1095, 333),
    d("036", "Indre", CVL, 217, 241),
    d("037", "Indre-et-Loire", CVL, 612, 272),
    d("038", "Isère", ARA, 1283, 512),
    d("039", "Jura", BFC, 258, 494),
    d("040", "Landes", NAQ, 420, 327),
    d("041", "Loir-et-Cher", CVL, 329, 267),
    d("042", "Loire", ARA, 767, 323),
    d("043", "Haute-Loire", ARA, 228, 257),
    d("044", "Loire-Atlantique", PDL, 1449, 207),
    d("045", "Loiret", CVL, 684, 325),
    d("046", "Lot", OCC, 174, 313),
    d("047", "Lot-et-Garonne", NAQ, 331, 319),
    d("048", "Lozère", OCC, 77, 152),
    d("049", "Maine-et-Loire", PDL, 820, 177),
    d("050", "Manche", NOR, 495, 446),
    d("051", "Marne", GES, 566, 613),
    d("052", "Haute-Marne", GES, 170, 426),
    d("053", "Mayenne", PDL, 307, 240),
    d("054", "Meurthe-et-Moselle", GES, 734, 591),
    d("055", "Meuse", GES, 182, 499),
    d("056", "Morbihan", BRE, 766, 249),
    d("057", "Moselle", GES, 1047, 725),
    d("058", "Nièvre", BFC, 201, 309),
    d("059", "Nord", HDF, 2609, 648),
    d("060", "Oise", HDF, 830, 679),
    d("061", "Orne", NOR, 278, 385),
    d("062", "Pas-de-Calais", HDF, 1462, 890),
    d("063", "Puy-de-Dôme", ARA, 665, 464),
    d("064", "Pyrénées-Atlantiques", NAQ, 687, 546),
    d("065", "Hautes-Pyrénées", OCC, 229, 469),
    d("066", "Pyrénées-Orientales", OCC, 482, 226),
    d("067", "Bas-Rhin", GES, 1141, 514),
    d("068", "Haut-Rhin", GES, 767, 366),
    d("069", "Rhône", ARA, 1883, 267),
    d("070", "Haute-Saône", BFC, 234, 539),
    d("071", "Saône-et-Loire", BFC, 551, 565),
    d("072", "Sarthe", PDL, 566, 354),
    d("073", "Savoie", ARA, 439, 273),
    d("074", "Haute-Savoie", ARA, 834, 279),
    d("075", "Paris", IDF, 2133, 20),
    d("076", "Seine-Maritime", NOR, 1255, 708),
    d("077", "Seine-et-Marne", IDF, 1421, 507),
    d("078", "Yvelines", IDF, 1448, 259),
    d("079", "Deux-Sèvres", NAQ, 375, 256),
    d("080", "Somme", HDF, 568, 772),
    d("081", "Tarn", OCC, 390, 314),
    d("082", "Tarn-et-Garonne", OCC, 262, 195),
    d("083", "Var", PAC, 1077, 153),
    d("084", "Vaucluse", PAC, 562, 151),
    d("085", "Vendée", PDL, 690, 255),
    d("086", "Vienne", NAQ, 439, 266),
    d("087", "Haute-Vienne", NAQ, 372, 195),
    d("088", "Vosges", GES, 361, 507),
    d("089", "Yonne", BFC, 335, 423),
    d("090", "Territoire de Belfort", BFC, 141, 101),
    d("091", "Essonne", IDF, 1306, 194),
    d("092", "Hauts-de-Seine", IDF, 1625, 36),
    d("093", "Seine-Saint-Denis", IDF, 1655, 40),
    d("094", "Val-de-Marne", IDF, 1407, 47),
    d("095", "Val-d'Oise", IDF, 1249, 184),
    d("971", "Guadeloupe", "Guadeloupe", 384, 32),
    d("972", "Martinique", "Martinique", 361, 34),
    d("973", "Guyane", "Guyane", 286, 22),
    d("974", "La Réunion", "La Réunion", 871, 24),
    d("976", "Mayotte", "Mayotte", 256, 17),
];
