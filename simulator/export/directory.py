"""The run's provider directory: the organizations, locations and practitioners every patient's care
names, and who each patient and encounter is seen by.

The directory is sized to the run (rules/providers.yaml): each city of the patients (rules/names.yaml)
gets primary care physicians, clinics, hospitals and hospital physicians at the cited people-per ratios
for its expected share of the run's patients, at least one of each. It is shared by all patients (its
resources are written once, before any patient's) and depends only on the run's seed, its number of
patients and the library, never on the chunk size: each patient's providers are a pure function of the
seed and the patient's row (a SplitMix64 hash of the seed, a purpose tag and the patient index),
computed a column at a time.

Who sees whom: each patient has, in their city, an adult primary care physician (family or internal
medicine), a pediatrician and a hospital. Wellness and ambulatory encounters name the pediatrician
before the patient's 18th birthday (`adult_age_years`) and the adult physician from then on, with
that physician's clinic; emergency encounters name an emergency physician of the patient's hospital
and its emergency department, inpatient ones a hospitalist and the ward, ICU ones an intensivist and
the intensive care unit (which of the hospital's physicians is on duty is drawn per encounter).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from simulator.export import us_core
from simulator.export.fhir_text import ID_SYSTEM, TERMINOLOGY, meta_object
from simulator.export.ids import uniforms, utc_ms
from simulator.model.library import Library
from simulator.model.providers import Concept, LocationType, Physicians, Providers
from simulator.model.schema import City

_NS = uuid.UUID("6f1d5a4e-8c0b-4c55-9b0e-6a3f0e1c7d21")  # ehrsim's namespace for shared resources


def shared_id(name: str) -> str:
    """A stable id for a shared resource, from its name in the directory."""
    return str(uuid.uuid5(_NS, name))


# The shared resource types, in the order they load in (what is referenced first).
SHARED_TYPES = ("Organization", "Location", "Practitioner", "PractitionerRole")
# Encounter columns naming who saw the patient (each a shared resource's id).
ENCOUNTER_PROVIDER_COLUMNS = ("practitioner_id", "location_id", "organization_id")
# Patient columns: the patient's primary care practitioner and clinic, and their hospital (organizations).
PATIENT_PROVIDER_COLUMNS = ("general_practitioner_id", "clinic_id", "hospital_id")

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
NUCC = "http://nucc.org/provider-taxonomy"
ROLE_CODE = TERMINOLOGY + "v3-RoleCode"
_V2_0203 = TERMINOLOGY + "v2-0203"
# NPIs are issued with a first digit of 1 or 2, exclusive to NPIs (45 CFR 162, Final Rule 69 FR 3434);
# every NPI issued so far starts with 1, so the synthetic ones start with 2: valid format, not issued.
_NPI_FIRST_DIGIT = "2"
_NPI_SPAN = 10**8  # the eight digits after the first
_NPI_STRIDE = 39_916_801  # coprime with 10**8: scatters the structural numbers over the span, one to one
_NPI_KINDS = (
    "clinic",
    "hospital",
    "family_medicine",
    "internal_medicine",
    "pediatrics",
    "emergency",
    "hospitalist",
    "intensivist",
)
_MAX_PER_KIND = 10_000  # per city: NPIs are numbered (city, kind, ordinal)

_ENCOUNTER_STAFF = {"emergency": "emergency", "inpatient": "hospitalist", "icu": "intensivist"}
_PRIMARY_CARE_CLASSES = ("wellness", "ambulatory")


def _uniform(seed: int, purpose: str, key: np.ndarray | int, salt: np.ndarray | int = 0) -> np.ndarray:
    """Uniforms in [0, 1), one per element of the (broadcast) keys: a pure function of the seed, the
    purpose (a `directory/...` tag of `ids.TAGS`) and the keys."""
    return uniforms(seed, np.asarray(key), f"directory/{purpose}", np.asarray(salt))


_TEXT_DTYPE = pd.Series(["text"]).dtype  # what pandas makes of a column of strings: str (pandas 3) or object


def _text(values: pa.Array, numbers: np.ndarray) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """values[numbers] as the column of strings pandas would make of them, taken in Arrow (a column of a
    million ids as Python strings would take a second to convert)."""
    taken = values.take(pa.array(numbers, pa.int64()))
    if pd.api.types.is_object_dtype(_TEXT_DTYPE):
        return taken.to_numpy(zero_copy_only=False)
    return pd.array(taken, dtype=_TEXT_DTYPE)


def npi_check_digit(payload: str) -> int:
    """The Luhn (mod 10 double-add-double) check digit of an NPI's first nine digits, computed with the
    card issuer prefix 80840 as CMS specifies."""
    total = 0
    for position, char in enumerate(reversed("80840" + payload)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return (10 - total % 10) % 10


def is_valid_npi(npi: str) -> bool:
    """Ten digits whose last is the Luhn check digit of the first nine (with the 80840 prefix)."""
    return len(npi) == 10 and npi.isdigit() and npi_check_digit(npi[:9]) == int(npi[9])


@dataclass(frozen=True)
class Pool:
    """Practitioners (or hospitals) grouped by city or by hospital: `members` holds each group's numbers one
    group after the other, group g at start[g]:start[g] + count[g]."""

    members: np.ndarray
    start: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, groups: list[list[int]]) -> Pool:
        count = np.array([len(g) for g in groups], np.int64)
        start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        return cls(np.array([p for g in groups for p in g], np.int64), start, count)

    def pick(self, group: np.ndarray, u: np.ndarray) -> np.ndarray:
        """For each row, the member at uniform `u` of its group."""
        return self.members[self.start[group] + (u * self.count[group]).astype(np.int64)]


@dataclass(frozen=True)
class Staffing:
    """Who works where, as arrays for assignment a column at a time: each practitioner's id, location and
    organization (by practitioner number); the primary care pools by city ("adult", "pediatrics") and the
    hospital pools by hospital ("emergency", "hospitalist", "intensivist"); each city's hospitals (hospital
    numbers) and each hospital's organization id."""

    seed: int
    city_keys: pd.MultiIndex  # (city, state, zip) -> city number
    practitioner: pa.Array  # ids as text, taken by number (see _text)
    location: pa.Array
    organization: pa.Array
    pools: dict[str, Pool]
    hospitals: Pool  # hospital numbers by city
    hospital_organization: pa.Array
    adult_age_years: int
    as_of: np.datetime64  # the reference date (ms, UTC): Patient.generalPractitioner is for the age then


@dataclass(frozen=True)
class Directory:
    """Shared resources by type, in the order they load in (what is referenced first), with literal
    `Type/id` references between them; the payer Organization of each coverage kind (`payers`, the
    private one the first of `private_payer_ids`)."""

    resources: dict[str, list[dict]]
    payers: dict[str, str]  # coverage kind (medicare, medicaid, private) -> payer Organization id
    private_payer_ids: tuple[str, ...]  # every private insurer's Organization id (payers["private"] first)
    staffing: Staffing = field(repr=False)

    def patient_providers(self, patients: pd.DataFrame) -> pd.DataFrame:
        """One row per patient (same index as `patients`): PATIENT_PROVIDER_COLUMNS. The general
        practitioner is the pediatrician for a patient under 18 at death or at the reference date,
        else the adult primary care physician; the clinic is that practitioner's."""
        s = self.staffing
        adult, pediatrician, hospital = self._picks(patients)
        death = utc_ms(patients["death_time"])
        as_of = np.where(np.isnat(death), s.as_of, death)
        gp = np.where(as_of < self._coming_of_age(utc_ms(patients["birth_time"])), pediatrician, adult)
        return pd.DataFrame(
            {
                "general_practitioner_id": _text(s.practitioner, gp),
                "clinic_id": _text(s.organization, gp),
                "hospital_id": _text(s.hospital_organization, hospital),
            },
            index=patients.index,
        )

    def encounter_providers(self, encounters: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
        """One row per encounter (same index as `encounters`): ENCOUNTER_PROVIDER_COLUMNS, from the
        encounter's class and the patient (`encounters.patient` is `patients.index`)."""
        s = self.staffing
        rows = pd.Index(patients["index"].to_numpy()).get_indexer(encounters["patient"].to_numpy())
        if (rows < 0).any():
            raise ValueError("encounters of patients missing from the patient table")
        adult, pediatrician, hospital = (a[rows] for a in self._picks(patients))
        child = utc_ms(encounters["start_time"]) < self._coming_of_age(utc_ms(patients["birth_time"]))[rows]
        klass = pd.Categorical(encounters["encounter_class"])
        present = set(klass.categories[np.unique(klass.codes)])
        if unknown := sorted(present - {*_PRIMARY_CARE_CLASSES, *_ENCOUNTER_STAFF}):
            raise ValueError(f"no providers for encounter classes {unknown}")
        practitioner = np.where(child, pediatrician, adult)
        on_duty = _uniform(s.seed, "on_duty", encounters["patient"].to_numpy(), encounters["encounter"].to_numpy())
        for encounter_class, pool in _ENCOUNTER_STAFF.items():
            if encounter_class in present:
                is_class = klass.codes == klass.categories.get_loc(encounter_class)
                practitioner[is_class] = s.pools[pool].pick(hospital[is_class], on_duty[is_class])
        return pd.DataFrame(
            {
                "practitioner_id": _text(s.practitioner, practitioner),
                "location_id": _text(s.location, practitioner),
                "organization_id": _text(s.organization, practitioner),
            },
            index=encounters.index,
        )

    def _picks(self, patients: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each patient's adult primary care physician, pediatrician (practitioner numbers) and hospital
        (hospital number), in their city, from the seed and the patient index."""
        s = self.staffing
        keys = pd.MultiIndex.from_frame(patients[["city", "state", "zip"]].astype(str))
        city = s.city_keys.get_indexer(keys)
        if (city < 0).any():
            raise ValueError(f"patients live in cities the directory does not know: {sorted(set(keys[city < 0]))}")
        index = patients["index"].to_numpy(np.int64)
        adult = s.pools["adult"].pick(city, _uniform(s.seed, "adult", index))
        pediatrician = s.pools["pediatrics"].pick(city, _uniform(s.seed, "pediatrics", index))
        hospital = s.hospitals.pick(city, _uniform(s.seed, "hospital", index))
        return adult, pediatrician, hospital

    def _coming_of_age(self, birth: np.ndarray) -> np.ndarray:
        """When each person (born at `birth`, datetime64[ms] UTC) reaches the adult age: the birthday of
        that age, at the hour of birth (a 29 February birthday falls on 1 March in other years)."""
        day = birth.astype("datetime64[D]")
        month = day.astype("datetime64[M]")
        year = day.astype("datetime64[Y]")
        birthday_month = (year + np.timedelta64(self.staffing.adult_age_years, "Y")).astype("datetime64[M]")
        birthday_month = birthday_month + (month - year.astype("datetime64[M]"))
        coming_of_age = birthday_month.astype("datetime64[D]") + (day - month.astype("datetime64[D]"))
        return coming_of_age.astype("datetime64[ms]") + (birth - day.astype("datetime64[ms]"))


def city_sizes(rules: Providers, people: float) -> dict[str, int]:
    """How many of each kind a city of `people` (expected) residents has: clinics, hospitals and each kind
    of physician at the cited people-per ratios, rounded; at least one clinic and one hospital, one
    physician of each primary care kind, one of each hospital kind per hospital."""

    def at_ratio(per: float, at_least: int = 1) -> int:
        return max(at_least, int(np.floor(people / per + 0.5)))

    sizes = {"hospital": at_ratio(rules.people_per(rules.hospitals))}
    for kind, physicians in (*_kinds(rules.primary_care), *_kinds(rules.hospital_staff)):
        at_least = sizes["hospital"] if kind in _ENCOUNTER_STAFF.values() else 1
        sizes[kind] = at_ratio(rules.people_per(physicians), at_least)
    primary_care = sum(sizes[kind] for kind, _ in _kinds(rules.primary_care))
    sizes["clinic"] = max(1, int(np.floor(primary_care / rules.physicians_per_clinic + 0.5)))
    return sizes


def _kinds(group: object) -> list[tuple[str, Physicians]]:
    return [(name, getattr(group, name)) for name in type(group).model_fields]  # type: ignore[attr-defined]


def build_directory(library: Library, seed: int, n_patients: int) -> Directory:
    """The directory of a run of `n_patients` with `seed`: each city of the library's names gets the
    providers of its expected share of the patients (patients are drawn uniformly over the cities)."""
    return _Builder(library, seed).build(n_patients)


class _Builder:
    """Builds the directory's resources (a few thousand at most: one Python dict each) and its staffing."""

    def __init__(self, library: Library, seed: int):
        self.seed = seed
        self.rules = library.providers
        self.names = library.names
        self.as_of = np.datetime64(library.demographics.reference_date, "ms")
        self.npi_offset = int(_uniform(seed, "npi", 0) * _NPI_SPAN)
        self.resources: dict[str, list[dict]] = {t: [] for t in SHARED_TYPES}
        self.practitioner: list[tuple[str, str, str]] = []  # (id, location id, organization id)
        self.location_address: dict[str, dict] = {}  # location id -> its address

    def build(self, n_patients: int) -> Directory:
        cities = self.names.cities
        sizes = city_sizes(self.rules, n_patients / len(cities))
        if max(sizes.values()) >= _MAX_PER_KIND:
            raise ValueError(f"a city of {n_patients / len(cities):.0f} people needs more providers than NPIs numbered")
        payers = self._payers()
        adult: list[list[int]] = []
        pediatrics: list[list[int]] = []
        hospital_staff: dict[str, list[list[int]]] = {kind: [] for kind in _ENCOUNTER_STAFF.values()}
        hospitals: list[str] = []  # organization ids, by hospital number
        city_hospitals: list[list[int]] = []
        for number, city in enumerate(cities):
            city_adult, city_pediatrics = self._clinics(number, city, sizes)
            adult.append(city_adult)
            pediatrics.append(city_pediatrics)
            city_hospitals.append([])
            for organization, staff in self._hospitals(number, city, sizes):
                city_hospitals[-1].append(len(hospitals))
                hospitals.append(organization)
                for kind, members in staff.items():
                    hospital_staff[kind].append(members)
        ids, locations, organizations = (pa.array(c, pa.large_string()) for c in zip(*self.practitioner, strict=True))
        staffing = Staffing(
            seed=self.seed,
            city_keys=pd.MultiIndex.from_tuples([(c.city, c.state, c.zip) for c in cities]),
            practitioner=ids,
            location=locations,
            organization=organizations,
            pools={
                "adult": Pool.of(adult),
                "pediatrics": Pool.of(pediatrics),
                **{kind: Pool.of(groups) for kind, groups in hospital_staff.items()},
            },
            hospitals=Pool.of(city_hospitals),
            hospital_organization=pa.array(hospitals, pa.large_string()),
            adult_age_years=self.rules.adult_age_years,
            as_of=self.as_of,
        )
        private = tuple(payers[f"private/{k}"] for k in range(len(self.rules.payers.private)))
        kinds = {"medicare": payers["medicare"], "medicaid": payers["medicaid"], "private": private[0]}
        return Directory(self.resources, kinds, private, staffing)

    # --- resources ----------------------------------------------------------------------------------

    def _payers(self) -> dict[str, str]:
        """Payer Organizations (no NPI: a payer is not a health care provider), by kind."""
        names = {"medicare": self.rules.payers.medicare, "medicaid": self.rules.payers.medicaid}
        names |= {f"private/{k}": name for k, name in enumerate(self.rules.payers.private)}
        ids = {}
        for kind, name in names.items():
            ids[kind] = shared_id(f"payer/{name}")
            self.resources["Organization"].append(
                {
                    "resourceType": "Organization",
                    "id": ids[kind],
                    "meta": meta_object(us_core.ORGANIZATION),
                    "identifier": [{"system": ID_SYSTEM + "organization", "value": f"payer/{name}"}],
                    "active": True,
                    "type": [_concept(TERMINOLOGY + "organization-type", self.rules.organization_types.payer)],
                    "name": name,
                }
            )
        return ids

    def _organization(self, key: str, npi_kind: str, city_number: int, ordinal: int, name: str, address: dict) -> str:
        organization_id = self._id(key)
        self.resources["Organization"].append(
            {
                "resourceType": "Organization",
                "id": organization_id,
                "meta": meta_object(us_core.ORGANIZATION),
                "identifier": [
                    self._npi(npi_kind, city_number, ordinal),
                    {"system": ID_SYSTEM + "organization", "value": key},
                ],
                "active": True,
                "type": [_concept(TERMINOLOGY + "organization-type", self.rules.organization_types.provider)],
                "name": name,
                "telecom": [self._phone(key)],
                "address": [address],
            }
        )
        return organization_id

    def _location(self, key: str, kind: LocationType, name: str, address: dict, organization_id: str) -> str:
        location_id = self._id(key)
        self.location_address[location_id] = address
        self.resources["Location"].append(
            {
                "resourceType": "Location",
                "id": location_id,
                "meta": meta_object(us_core.LOCATION),
                "identifier": [{"system": ID_SYSTEM + "location", "value": key}],
                "status": "active",
                "name": name,
                "type": [_concept(ROLE_CODE, kind)],
                "telecom": [self._phone(location_id)],  # a role at the location gives the same number
                "address": address,
                "managingOrganization": {"reference": f"Organization/{organization_id}"},
            }
        )
        return location_id

    def _clinics(self, number: int, city: City, sizes: dict[str, int]) -> tuple[list[int], list[int]]:
        """The city's clinics and primary care physicians: the physicians, the kinds interleaved (so that
        each clinic has some of each), split into consecutive blocks, one per clinic. Returns the adult
        physicians' and the pediatricians' practitioner numbers."""
        kinds = _kinds(self.rules.primary_care)
        most = max(sizes[kind] for kind, _ in kinds)
        roster = [(kind, physicians, k) for k in range(most) for kind, physicians in kinds if k < sizes[kind]]
        n_clinics = sizes["clinic"]
        clinic_type = self.rules.location_types.clinic
        clinics = []
        for k in range(n_clinics):
            key = f"{self.seed}/{number}/clinic/{k}"
            address = self._address(key, city)
            name = f"{self._pick(self.names.streets, 'street', key, 1)} {clinic_type.name}"
            organization_id = self._organization(key, "clinic", number, k, name, address)
            location_id = self._location(f"{key}/site", clinic_type, name, address, organization_id)
            clinics.append((organization_id, location_id))
        adult, pediatrics = [], []
        for position, (kind, physicians, k) in enumerate(roster):
            organization_id, location_id = clinics[position * n_clinics // len(roster)]
            member = self._physician(number, kind, k, physicians, organization_id, location_id)
            (pediatrics if kind == "pediatrics" else adult).append(member)
        return adult, pediatrics

    def _hospitals(self, number: int, city: City, sizes: dict[str, int]) -> Iterator[tuple[str, dict[str, list[int]]]]:
        """The city's hospitals, each with an emergency department, a ward and an ICU, and their staff:
        each kind of hospital physician dealt round the hospitals (at least one each). Yields each
        hospital's organization id and its staff's practitioner numbers by kind."""
        types = self.rules.location_types
        unit_types = {"emergency": types.emergency, "hospitalist": types.ward, "intensivist": types.icu}
        for h in range(sizes["hospital"]):
            key = f"{self.seed}/{number}/hospital/{h}"
            address = self._address(key, city)
            name = f"{self._pick(self.names.family, 'family', key, 1)} Memorial Hospital"
            organization_id = self._organization(key, "hospital", number, h, name, address)
            units = {
                kind: self._location(f"{key}/{kind}", unit, f"{name} {unit.name}", address, organization_id)
                for kind, unit in unit_types.items()
            }
            staff: dict[str, list[int]] = {}
            for kind, physicians in _kinds(self.rules.hospital_staff):
                staff[kind] = []
                for k in range(h, sizes[kind], sizes["hospital"]):
                    staff[kind].append(self._physician(number, kind, k, physicians, organization_id, units[kind]))
            yield organization_id, staff

    def _physician(
        self, number: int, kind: str, ordinal: int, physicians: Physicians, organization_id: str, location_id: str
    ) -> int:
        """The `ordinal`th physician of a kind in city `number`: a Practitioner (named from the library's
        lists) and their one PractitionerRole, their specialty at their organization and location.
        Returns the practitioner number."""
        key = f"{self.seed}/{number}/{kind}/{ordinal}"
        practitioner_id = self._id(key)
        given = self._pick([*self.names.given_female, *self.names.given_male], "given", key)
        family = self._pick(self.names.family, "family", key)
        self.resources["Practitioner"].append(
            {
                "resourceType": "Practitioner",
                "id": practitioner_id,
                "meta": meta_object(us_core.PRACTITIONER),
                "identifier": [self._npi(kind, number, ordinal)],
                "active": True,
                "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr."]}],
                # reached at work: the phone and address of the location they work at
                "telecom": [self._phone(location_id)],
                "address": [self.location_address[location_id]],
            }
        )
        taxonomy = _concept(NUCC, physicians.taxonomy)
        self.resources["PractitionerRole"].append(
            {
                "resourceType": "PractitionerRole",
                "id": self._id(f"{key}/role"),
                "meta": meta_object(us_core.PRACTITIONER_ROLE),
                "active": True,
                "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
                "organization": {"reference": f"Organization/{organization_id}"},
                "code": [taxonomy],
                "specialty": [taxonomy],
                "location": [{"reference": f"Location/{location_id}"}],
                "telecom": [self._phone(location_id)],
            }
        )
        self.practitioner.append((practitioner_id, location_id, organization_id))
        return len(self.practitioner) - 1

    # --- pieces --------------------------------------------------------------------------------------

    def _id(self, key: str) -> str:
        return shared_id(f"directory/{key}")

    def _key_number(self, key: str) -> int:
        """A stable 64-bit number of a text key, for the hash."""
        return int.from_bytes(uuid.uuid5(_NS, key).bytes[:8], "little")

    def _pick(self, values: list[str], purpose: str, key: str, salt: int = 0) -> str:
        u = _uniform(self.seed, purpose, self._key_number(key), salt)
        return values[int(u * len(values))]

    def _address(self, key: str, city: City) -> dict:
        number = 1 + int(_uniform(self.seed, "number", self._key_number(key)) * 9999)
        street = self._pick(self.names.streets, "street", key)
        suffix = self._pick(self.names.street_suffixes, "suffix", key)
        return {
            "use": "work",
            "line": [f"{number} {street} {suffix}"],
            "city": city.city,
            "state": city.state,
            "postalCode": city.zip,
            "country": "US",
        }

    def _phone(self, key: str) -> dict:
        """A work phone in 555-0100 to 555-0199, the numbers reserved for fiction."""
        digits = int(_uniform(self.seed, "phone", self._key_number(key)) * 100)
        return {"system": "phone", "value": f"555-01{digits:02d}", "use": "work"}

    def _npi(self, kind: str, city_number: int, ordinal: int) -> dict:
        """A synthetic NPI: a first digit of 2, eight digits that number (city, kind, ordinal) one to one,
        scattered by a seeded affine map, and the check digit."""
        structural = (city_number * len(_NPI_KINDS) + _NPI_KINDS.index(kind)) * _MAX_PER_KIND + ordinal
        if structural >= _NPI_SPAN:
            raise ValueError("too many cities to number their providers' NPIs")
        payload = _NPI_FIRST_DIGIT + f"{(structural * _NPI_STRIDE + self.npi_offset) % _NPI_SPAN:08d}"
        return {
            "use": "official",
            "type": {
                "coding": [{"system": _V2_0203, "code": "NPI", "display": "National provider identifier"}],
                "text": "Synthetic NPI (valid format and check digit, not issued by CMS)",
            },
            "system": NPI_SYSTEM,
            "value": payload + str(npi_check_digit(payload)),
        }


def _concept(system: str, concept: Concept) -> dict:
    return {"coding": [{"system": system, "code": concept.code, "display": concept.display}]}
