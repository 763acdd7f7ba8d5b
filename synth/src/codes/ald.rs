//! The list of long-term illnesses (ALD 1 to 32) with the ICD-10 codes that justify them and
//! the drugs their patients typically receive.
//!
//! Weights follow the order of magnitude of the French ALD prevalences (cancer, diabetes and
//! cardiovascular disease first; haemophilia and cystic fibrosis very rare). ALD 4 (bilharziasis
//! complications) and 12 (severe hypertension, withdrawn in 2011) are left out.

/// One long-term illness.
#[derive(Debug, Clone, Copy)]
pub struct Ald {
    /// `imb_ald_num`.
    pub number: i16,
    /// Relative frequency among ALD entries.
    pub weight: f64,
    /// ICD-10 codes recorded as `med_mtf_cod` (all present in [`super::cim10::CIM10`]).
    pub icd10: &'static [&'static str],
    /// ATC codes often dispensed to these patients (all present in [`super::atc::ATC`]).
    pub drugs: &'static [&'static str],
}

const fn ald(
    number: i16,
    weight: f64,
    icd10: &'static [&'static str],
    drugs: &'static [&'static str],
) -> Ald {
    Ald {
        number,
        weight,
        icd10,
        drugs,
    }
}

/// The ALD list.
pub const ALDS: &[Ald] = &[
    // Accident vasculaire cérébral invalidant
    ald(
        1,
        3.0,
        &["I639", "I634", "I64", "I693", "I619"],
        &["B01AC06", "B01AC04", "C10AA05", "B01AF02"],
    ),
    // Insuffisances médullaires et autres cytopénies chroniques
    ald(2, 0.3, &["D619", "D469"], &["B03XA01", "B03BB01"]),
    // Artériopathies chroniques avec manifestations ischémiques
    ald(
        3,
        2.5,
        &["I702", "I739"],
        &["B01AC04", "B01AC06", "C10AA07"],
    ),
    // Insuffisance cardiaque grave, troubles du rythme graves, cardiopathies valvulaires graves, cardiopathies congénitales graves
    ald(
        5,
        12.0,
        &[
            "I500", "I509", "I501", "I480", "I481", "I482", "I350", "Q210",
        ],
        &[
            "B01AF02", "B01AF01", "C07AB07", "C03CA01", "C01BD01", "C09DX04", "C03DA01",
        ],
    ),
    // Maladies chroniques actives du foie et cirrhoses
    ald(
        6,
        1.0,
        &["K703", "K746", "B181", "B182"],
        &["J05AP55", "J05AF10", "A06AD11"],
    ),
    // Déficit immunitaire primitif grave, infection par le VIH
    ald(7, 0.6, &["B24"], &["J05AR03", "J05AX12"]),
    // Diabète de type 1 et diabète de type 2
    ald(
        8,
        25.0,
        &["E119", "E112", "E113", "E115", "E109", "E101"],
        &[
            "A10BA02", "A10BB09", "A10BH01", "A10BD07", "A10AE04", "A10BJ05", "A10BK03", "A10AB05",
        ],
    ),
    // Formes graves des affections neurologiques et musculaires, épilepsie grave
    ald(
        9,
        1.0,
        &["G409", "G403", "G122", "G710", "G700", "G809"],
        &["N03AX14", "N03AG01", "N03AX09", "N07XX02"],
    ),
    // Hémoglobinopathies, hémolyses chroniques constitutionnelles et acquises sévères
    ald(10, 0.2, &["D570", "D571", "D561"], &["B03BB01", "L01XX05"]),
    // Hémophilies et affections constitutionnelles de l'hémostase graves
    ald(11, 0.05, &["D66", "D67"], &["B02BD02", "B02BD04"]),
    // Maladie coronaire
    ald(
        13,
        8.0,
        &["I251", "I252", "I255", "I200", "I214"],
        &[
            "B01AC06", "C10AA05", "C07AB07", "B01AC04", "C09AA05", "B01AC24",
        ],
    ),
    // Insuffisance respiratoire chronique grave
    ald(
        14,
        3.0,
        &["J449", "J441", "J961", "J841", "J47"],
        &["R03AK07", "R03BB04", "R03AL03", "R03AK06"],
    ),
    // Maladie d'Alzheimer et autres démences
    ald(
        15,
        3.0,
        &["G309", "G301", "F009", "F03", "F019"],
        &["N06DA02", "N06DX01", "N06DA03", "N05AX08"],
    ),
    // Maladie de Parkinson
    ald(16, 2.0, &["G20"], &["N04BA02", "N04BC05", "N04BD02"]),
    // Maladies métaboliques héréditaires nécessitant un traitement prolongé spécialisé
    ald(17, 0.1, &["E700", "E831"], &[]),
    // Mucoviscidose
    ald(18, 0.05, &["E840", "E849"], &["R05CB01"]),
    // Néphropathie chronique grave et syndrome néphrotique primitif
    ald(
        19,
        2.0,
        &["N184", "N185", "N189", "Q613"],
        &["B03XA01", "V03AE02", "C03CA01"],
    ),
    // Paraplégie
    ald(20, 0.3, &["G822", "G825"], &["M03BX01"]),
    // Vascularites, lupus érythémateux systémique, sclérodermie systémique
    ald(21, 0.5, &["M321", "M329", "M349"], &["P01BA02", "H02AB07"]),
    // Polyarthrite rhumatoïde évolutive
    ald(
        22,
        1.5,
        &["M059", "M069"],
        &["L04AX03", "L04AB04", "L04AB01", "H02AB07", "L04AA13"],
    ),
    // Affections psychiatriques de longue durée
    ald(
        23,
        10.0,
        &[
            "F200", "F209", "F259", "F319", "F322", "F331", "F840", "F102",
        ],
        &[
            "N05AH03", "N05AX08", "N05AX12", "N06AB10", "N05AN01", "N05AH04", "N06AX16",
        ],
    ),
    // Rectocolite hémorragique et maladie de Crohn évolutives
    ald(
        24,
        0.8,
        &["K509", "K500", "K501", "K519"],
        &["A07EC02", "L04AB02", "L04AB04", "L04AX01"],
    ),
    // Sclérose en plaques
    ald(
        25,
        0.8,
        &["G35"],
        &["L04AA27", "L04AA31", "L03AB07", "L04AX07"],
    ),
    // Scoliose idiopathique structurale évolutive
    ald(26, 0.1, &["M412"], &[]),
    // Spondylarthrite grave
    ald(27, 0.5, &["M45"], &["L04AB04", "L04AB01", "M01AE02"]),
    // Suites de transplantation d'organe
    ald(
        28,
        0.3,
        &["Z940", "Z941", "Z944"],
        &["L04AD02", "L04AA06", "L04AD01"],
    ),
    // Tuberculose active, lèpre
    ald(29, 0.1, &["A150", "A162"], &["J04AB02", "J04AC01"]),
    // Tumeur maligne, affection maligne du tissu lymphatique ou hématopoïétique
    ald(
        30,
        25.0,
        &[
            "C509", "C61", "C349", "C189", "C20", "C679", "C64", "C439", "C56", "C541", "C259",
            "C900", "C911", "C833", "C73", "C169",
        ],
        &[
            "L02BG04", "L02BA01", "L02AE02", "L01BC06", "A04AA01", "N02AA05", "L02BG03",
        ],
    ),
    // Affection grave caractérisée hors liste
    ald(31, 1.0, &["M819", "I270", "E669", "D693"], &[]),
    // Polypathologie invalidante
    ald(32, 0.5, &["I500", "J449", "N189"], &[]),
];
