"""Build trainer/general_replay.jsonl: the packaged base model's own correct greedy answers to general questions.

Each candidate below is asked the way the gate asks its general regression set (no system prompt: the
chat template's default; greedy; the trainer's `regression_max_new_tokens`). A reply is kept when it
holds an accepted answer, ended on its own (not cut off mid-sentence) and was not found false in detail
when read (WRONG_IN_DETAIL). The hand-written rows already in the file come first, unchanged; the built
ones follow, one per question (a rerun replaces the rows it wrote before, marked by meta.built_by). Questions of the gate's regression set
(trainer/regression_set.jsonl), and near-duplicates of them, are left out: replaying them would teach
the test.

    python -m trainer.build_general_replay

Loads the base as the trainer does, from the AION_* settings (CPU, full precision here: on CUDA the
trainer loads nf4, whose replies may differ).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter

from .base_model import load_base
from .data_builder import DEFAULT_GENERAL_REPLAY_FILE
from .evaluate import RegressionItem, answer_greedily, load_regression_set, mentions
from .model_size import count_parameters
from .precision import autocast_dtype
from .settings import TrainerSettings

logger = logging.getLogger(__name__)

# (question, accepted answers separated by "|"); an answer counts as a whole word, case-insensitive.
CANDIDATES: list[tuple[str, str]] = [
    # capitals (none of the regression set's countries)
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Portugal?", "Lisbon"),
    ("What is the capital of Ireland?", "Dublin"),
    ("What is the capital of Belgium?", "Brussels"),
    ("What is the capital of Switzerland?", "Bern|Berne"),
    ("What is the capital of Denmark?", "Copenhagen"),
    ("What is the capital of Finland?", "Helsinki"),
    ("What is the capital of Iceland?", "Reykjavik|Reykjavík"),
    ("What is the capital of Romania?", "Bucharest"),
    ("What is the capital of Bulgaria?", "Sofia"),
    ("What is the capital of Serbia?", "Belgrade"),
    ("What is the capital of Croatia?", "Zagreb"),
    ("What is the capital of Ukraine?", "Kyiv|Kiev"),
    ("What is the capital of Turkey?", "Ankara"),
    ("What is the capital of Saudi Arabia?", "Riyadh"),
    ("What is the capital of Iraq?", "Baghdad"),
    ("What is the capital of Syria?", "Damascus"),
    ("What is the capital of Lebanon?", "Beirut"),
    ("What is the capital of Jordan?", "Amman"),
    ("What is the capital of Afghanistan?", "Kabul"),
    ("What is the capital of Pakistan?", "Islamabad"),
    ("What is the capital of Bangladesh?", "Dhaka"),
    ("What is the capital of Nepal?", "Kathmandu"),
    ("What is the capital of Vietnam?", "Hanoi"),
    ("What is the capital of Malaysia?", "Kuala Lumpur"),
    ("What is the capital of Mongolia?", "Ulaanbaatar|Ulan Bator"),
    ("What is the capital of North Korea?", "Pyongyang"),
    ("What is the capital of Mexico?", "Mexico City"),
    ("What is the capital of Argentina?", "Buenos Aires"),
    ("What is the capital of Brazil?", "Brasília|Brasilia"),
    ("What is the capital of Colombia?", "Bogotá|Bogota"),
    ("What is the capital of Venezuela?", "Caracas"),
    ("What is the capital of Ecuador?", "Quito"),
    ("What is the capital of Uruguay?", "Montevideo"),
    ("What is the capital of Jamaica?", "Kingston"),
    ("What is the capital of Ethiopia?", "Addis Ababa"),
    ("What is the capital of Ghana?", "Accra"),
    ("What is the capital of Morocco?", "Rabat"),
    ("What is the capital of Algeria?", "Algiers"),
    ("What is the capital of Tunisia?", "Tunis"),
    ("What is the capital of Libya?", "Tripoli"),
    ("What is the capital of Sudan?", "Khartoum"),
    ("What is the capital of Uganda?", "Kampala"),
    ("What is the capital of Zimbabwe?", "Harare"),
    ("What is the capital of Senegal?", "Dakar"),
    ("What is the capital of New Zealand?", "Wellington"),
    ("What is the capital of Scotland?", "Edinburgh"),
    ("What is the capital of Wales?", "Cardiff"),
    ("What is the capital of the United States?", "Washington"),
    ("What is the capital of Qatar?", "Doha"),
    ("What is the capital of Kuwait?", "Kuwait City"),
    ("What is the capital of United Arab Emirates?", "Abu Dhabi"),
    ("What is the capital of Oman?", "Muscat"),
    ("What is the capital of Armenia?", "Yerevan"),
    ("What is the capital of Georgia?", "Tbilisi"),
    ("What is the capital of Azerbaijan?", "Baku"),
    ("What is the capital of Uzbekistan?", "Tashkent"),
    ("What is the capital of Belarus?", "Minsk"),
    ("What is the capital of Lithuania?", "Vilnius"),
    ("What is the capital of Latvia?", "Riga"),
    ("What is the capital of Estonia?", "Tallinn"),
    ("What is the capital of Slovakia?", "Bratislava"),
    ("What is the capital of Slovenia?", "Ljubljana"),
    ("What is the capital of Albania?", "Tirana"),
    ("What is the capital of Cyprus?", "Nicosia"),
    ("What is the capital of Malta?", "Valletta"),
    ("What is the capital of Cambodia?", "Phnom Penh"),
    ("What is the capital of Laos?", "Vientiane"),
    ("What is the capital of Costa Rica?", "San José|San Jose"),
    ("What is the capital of Guatemala?", "Guatemala City"),
    ("What is the capital of Honduras?", "Tegucigalpa"),
    ("What is the capital of Nicaragua?", "Managua"),
    ("What is the capital of El Salvador?", "San Salvador"),
    ("What is the capital of Dominican Republic?", "Santo Domingo"),
    ("What is the capital of Haiti?", "Port-au-Prince"),
    ("What is the capital of Paraguay?", "Asunción|Asuncion"),
    ("What is the capital of Cameroon?", "Yaoundé|Yaounde"),
    ("What is the capital of Angola?", "Luanda"),
    ("What is the capital of Mozambique?", "Maputo"),
    ("What is the capital of Zambia?", "Lusaka"),
    ("What is the capital of Rwanda?", "Kigali"),
    ("What is the capital of Somalia?", "Mogadishu"),
    ("What is the capital of Mali?", "Bamako"),
    ("What is the capital of Madagascar?", "Antananarivo"),
    ("What is the capital of Fiji?", "Suva"),
    ("What is the capital of Panama?", "Panama City"),
    # geography
    ("What is the largest ocean on Earth?", "Pacific"),
    ("What is the tallest mountain in the world?", "Everest"),
    ("What is the longest river in Africa?", "Nile"),
    ("What is the largest desert in Africa?", "Sahara"),
    ("What is the largest country in South America?", "Brazil"),
    ("How many continents are there?", "7|seven"),
    ("Which ocean lies between Europe and North America?", "Atlantic"),
    ("What is the largest continent?", "Asia"),
    ("What is the largest island in the world?", "Greenland"),
    ("What is the largest rainforest in the world?", "Amazon"),
    ("In which country is the Great Wall?", "China"),
    ("In which country is the Taj Mahal?", "India"),
    ("What is the longest river in South America?", "Amazon"),
    ("Which US state is the largest by area?", "Alaska"),
    ("Which is the coldest continent?", "Antarctica"),
    ("Which city is known as the Big Apple?", "New York"),
    ("What is the largest city in the United States?", "New York"),
    ("On which continent is Kenya?", "Africa"),
    ("On which continent is Argentina?", "South America"),
    ("On which continent is Italy?", "Europe"),
    ("Which country is shaped like a boot?", "Italy"),
    ("What is the largest country in the world by area?", "Russia"),
    ("In which country is the city of Venice?", "Italy"),
    # science and nature
    ("What planet do we live on?", "Earth"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the closest planet to the Sun?", "Mercury"),
    ("How many planets are in our solar system?", "8|eight"),
    ("Which planet is famous for its rings?", "Saturn"),
    ("What is the natural satellite of the Earth called?", "Moon"),
    ("What star is at the center of our solar system?", "Sun"),
    ("What gas do plants absorb from the air?", "carbon dioxide|CO2"),
    ("What gas do humans need to breathe?", "oxygen"),
    ("What is the chemical symbol for gold?", "Au"),
    ("What is the chemical symbol for silver?", "Ag"),
    ("What is the chemical symbol for carbon?", "C"),
    ("What is the chemical symbol for hydrogen?", "H"),
    ("What is the chemical symbol for helium?", "He"),
    ("What is the chemical symbol for potassium?", "K"),
    ("What is the chemical symbol for nitrogen?", "N"),
    ("What is the chemical symbol for copper?", "Cu"),
    ("What is the chemical symbol for calcium?", "Ca"),
    ("What is the chemical symbol for lead?", "Pb"),
    ("What is the chemical symbol for zinc?", "Zn"),
    ("What is the chemical symbol for tin?", "Sn"),
    ("What is the chemical symbol for mercury?", "Hg"),
    ("What is the chemical symbol for neon?", "Ne"),
    ("What is the chemical symbol for sulfur?", "S"),
    ("What is the chemical symbol for phosphorus?", "P"),
    ("What is the chemical symbol for magnesium?", "Mg"),
    ("What is the chemical symbol for chlorine?", "Cl"),
    ("What is the chemical symbol for aluminum?", "Al"),
    ("What is the chemical symbol for uranium?", "U"),
    ("What is the chemical symbol for fluorine?", "F"),
    ("What is the chemical symbol for lithium?", "Li"),
    ("What is the chemical formula for table salt?", "NaCl"),
    ("What is the chemical formula for carbon dioxide?", "CO2"),
    ("What is the boiling point of water in Celsius?", "100"),
    ("What is the freezing point of water in Celsius?", "0|zero"),
    ("What is the hardest natural substance?", "diamond|diamonds"),
    ("Which organ pumps blood through the body?", "heart"),
    ("Which organs do humans use to breathe?", "lungs"),
    ("How many bones are in the adult human body?", "206"),
    ("What is the largest organ of the human body?", "skin"),
    ("What is the center of an atom called?", "nucleus"),
    ("What force pulls objects toward the Earth?", "gravity"),
    ("What does a thermometer measure?", "temperature"),
    ("What is the process by which plants make food from sunlight?", "photosynthesis"),
    ("What is the basic unit of life?", "cell"),
    ("What is the largest mammal?", "blue whale"),
    ("What is the fastest land animal?", "cheetah"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("How many legs does a spider have?", "8|eight"),
    ("How many legs does an insect have?", "6|six"),
    ("What is a baby dog called?", "puppy"),
    ("What is a baby cat called?", "kitten"),
    ("What does a caterpillar turn into?", "butterfly|moth"),
    ("What do bees make?", "honey"),
    ("Which vitamin does the body make from sunlight?", "vitamin D"),
    ("Who developed the theory of relativity?", "Einstein"),
    ("Who discovered penicillin?", "Fleming"),
    ("Who proposed the theory of evolution by natural selection?", "Darwin"),
    ("Who formulated the laws of motion and universal gravitation?", "Newton"),
    ("What is the main gas in the Earth's atmosphere?", "nitrogen"),
    ("What color is the sky on a clear day?", "blue"),
    ("What is the chemical symbol for sodium chloride?", "NaCl"),
    # history
    ("In what year did World War II end?", "1945"),
    ("In what year did World War II begin?", "1939"),
    ("In what year did World War I begin?", "1914"),
    ("In what year did World War I end?", "1918"),
    ("In what year did Columbus first reach the Americas?", "1492"),
    ("In what year did humans first land on the Moon?", "1969"),
    ("In what year did the Titanic sink?", "1912"),
    ("In what year did the United States declare independence?", "1776"),
    ("In what year did the French Revolution begin?", "1789"),
    ("In what year did the Soviet Union collapse?", "1991"),
    ("Who was the first President of the United States?", "Washington"),
    ("Who was the first person to walk on the Moon?", "Armstrong"),
    ("Who was the first person in space?", "Gagarin"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Who wrote Hamlet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo|da Vinci"),
    ("Who invented the telephone?", "Bell"),
    ("Who invented the light bulb?", "Edison"),
    ("Who was the first woman to win a Nobel Prize?", "Curie"),
    ("Which ancient civilization built the pyramids of Giza?", "Egyptians|Egyptian"),
    ("Who was the British prime minister during most of World War II?", "Churchill"),
    ("Who wrote Pride and Prejudice?", "Austen"),
    ("Who painted The Starry Night?", "Van Gogh"),
    ("Who wrote the Odyssey?", "Homer"),
    ("Who composed the Moonlight Sonata?", "Beethoven"),
    ("Who was the first emperor of Rome?", "Augustus"),
    ("Who wrote the Harry Potter books?", "Rowling"),
    # arithmetic and counting (no operands the regression set uses with the same operation)
    ("What is 5 + 5?", "10|ten"),
    ("What is 9 + 1?", "10|ten"),
    ("What is 4 + 4?", "8|eight"),
    ("What is 3 + 3?", "6|six"),
    ("What is 7 + 7?", "14|fourteen"),
    ("Compute 2 + 5. Reply with just the number.", "7|seven"),
    ("Compute 9 + 9. Reply with just the number.", "18|eighteen"),
    ("Compute 10 - 7. Reply with just the number.", "3|three"),
    ("What is 6 + 6?", "12|twelve"),
    ("What is 7 + 2?", "9|nine"),
    ("What is 3 + 5?", "8|eight"),
    ("What is 10 + 5?", "15|fifteen"),
    ("What is 20 + 30?", "50|fifty"),
    ("What is 100 + 100?", "200"),
    ("What is 4 times 2?", "8|eight"),
    ("What is 5 times 5?", "25"),
    ("What is 2 times 6?", "12|twelve"),
    ("What is 10 times 10?", "100"),
    ("What is 8 - 3?", "5|five"),
    ("What is 10 - 4?", "6|six"),
    ("What is 20 - 5?", "15|fifteen"),
    ("What is 100 - 1?", "99"),
    ("What is 12 divided by 3?", "4|four"),
    ("What is 20 divided by 4?", "5|five"),
    ("What is half of 20?", "10|ten"),
    ("What is double 4?", "8|eight"),
    ("What is the sum of 5 and 6?", "11|eleven"),
    ("Compute 7 + 1. Reply with just the number.", "8|eight"),
    ("Compute 8 + 4. Reply with just the number.", "12|twelve"),
    ("Compute 6 - 2. Reply with just the number.", "4|four"),
    ("Compute 5 + 3. Reply with just the number.", "8|eight"),
    ("Compute 4 times 5. Reply with just the number.", "20|twenty"),
    ("How many minutes are in an hour?", "60|sixty"),
    ("How many seconds are in a minute?", "60|sixty"),
    ("How many hours are in a day?", "24"),
    ("How many months are in a year?", "12|twelve"),
    ("How many days are in a year?", "365"),
    ("How many weeks are in a year?", "52"),
    ("How many days are in a leap year?", "366"),
    ("How many sides does a triangle have?", "3|three"),
    ("How many sides does a square have?", "4|four"),
    ("How many sides does a pentagon have?", "5|five"),
    ("How many sides does a hexagon have?", "6|six"),
    ("How many sides does an octagon have?", "8|eight"),
    ("How many degrees are in a right angle?", "90"),
    ("How many degrees are in a circle?", "360"),
    ("How many cents are in a dollar?", "100"),
    ("How many eggs are in a dozen?", "12|twelve"),
    ("How many letters are in the English alphabet?", "26"),
    ("How many players are on the field for one soccer team?", "11|eleven"),
    ("How many strings does a standard guitar have?", "6|six"),
    ("How many wheels does a bicycle have?", "2|two"),
    ("How many days are in February in a non-leap year?", "28"),
    # units and language
    ("How many centimeters are in a meter?", "100"),
    ("How many meters are in a kilometer?", "1000|1,000|thousand"),
    ("How many grams are in a kilogram?", "1000|1,000|thousand"),
    ("How many millimeters are in a centimeter?", "10|ten"),
    ("How many inches are in a foot?", "12|twelve"),
    ("How many feet are in a yard?", "3|three"),
    ("How many milliliters are in a liter?", "1000|1,000|thousand"),
    ("What is the plural of 'mouse'?", "mice"),
    ("What is the plural of 'child'?", "children"),
    ("What is the plural of 'foot'?", "feet"),
    ("What is the plural of 'man'?", "men"),
    ("What is the past tense of 'go'?", "went"),
    ("What is the past tense of 'eat'?", "ate"),
    ("What is the past tense of 'run'?", "ran"),
    ("What is the opposite of up?", "down"),
    ("What is the opposite of big?", "small|little"),
    ("What is the opposite of day?", "night"),
    ("What is the opposite of happy?", "sad|unhappy"),
    ("What is the opposite of fast?", "slow"),
    ("What is the opposite of yes?", "no"),
    ("What is the opposite of open?", "closed|shut"),
    ("What is the opposite of black?", "white"),
    ("What is the opposite of left?", "right"),
    ("Translate 'thank you' into Spanish.", "gracias"),
    ("Translate 'goodbye' into Spanish.", "adiós|adios"),
    ("Translate 'hello' into French.", "bonjour"),
    ("Translate 'thank you' into French.", "merci"),
    ("Translate 'cat' into Spanish.", "gato"),
    ("Translate 'water' into Spanish.", "agua"),
    ("What is the main language spoken in Brazil?", "Portuguese"),
    ("What is the main language spoken in Mexico?", "Spanish"),
    ("What is the main language spoken in Italy?", "Italian"),
    ("What is the main language spoken in Argentina?", "Spanish"),
    ("What is the plural of 'tooth'?", "teeth"),
    ("What is the plural of 'woman'?", "women"),
    ("What is the plural of 'goose'?", "geese"),
    ("What is the opposite of old?", "young|new"),
    ("What is the opposite of tall?", "short"),
    ("What is the opposite of full?", "empty"),
    ("What is the opposite of love?", "hate"),
    ("What is the opposite of win?", "lose"),
    ("What is the opposite of early?", "late"),
    ("What is the opposite of wet?", "dry"),
    ("What is the main language spoken in Portugal?", "Portuguese"),
    ("What is the main language spoken in Chile?", "Spanish"),
    ("What is the main language spoken in Colombia?", "Spanish"),
    ("What is the main language spoken in the Netherlands?", "Dutch"),
    ("What is the main language spoken in Sweden?", "Swedish"),
    ("What is the main language spoken in Turkey?", "Turkish"),
    ("What is the currency of Brazil?", "real"),
    ("What is the currency of South Africa?", "rand"),
    ("What is the currency of the European Union?", "euro"),
    ("What is the currency of India?", "rupee"),
    ("What is the currency of Mexico?", "peso"),
    ("What is the currency of Switzerland?", "franc"),
    ("How many vowels are in the English alphabet?", "5|five"),
    # everyday facts
    ("What color is a ripe banana?", "yellow"),
    ("What color do you get when you mix blue and yellow?", "green"),
    ("What color do you get when you mix red and white?", "pink"),
    ("What color is snow?", "white"),
    ("What color is a ripe tomato?", "red"),
    ("What color is grass?", "green"),
    ("What drink do cows give us?", "milk"),
    ("Which animal says 'moo'?", "cow"),
    ("Which animal says 'meow'?", "cat"),
    ("What is frozen water called?", "ice"),
    ("What is a house made of ice blocks called?", "igloo"),
    ("Which meal is eaten in the morning?", "breakfast"),
    ("What day comes after Monday?", "Tuesday"),
    ("What month comes after January?", "February"),
    ("What is the last month of the year?", "December"),
    ("Which season comes after winter?", "spring"),
    ("What do you call a doctor who fixes teeth?", "dentist"),
    ("What do you call a doctor for animals?", "veterinarian|vet"),
    ("What tool is used to cut paper?", "scissors"),
    ("What is the main ingredient of guacamole?", "avocado|avocados"),
    ("What is bread mainly made from?", "flour|wheat"),
    ("What shape is a ball?", "round|sphere|spherical"),
    ("What do you use to unlock a door?", "key"),
    ("Where do fish live?", "water"),
    ("What do people use an umbrella for?", "rain"),
    ("Which fruit is said to keep the doctor away?", "apple"),
    # simple definitions
    ("What is a noun?", "person|place|thing"),
    ("What is a verb?", "action"),
    ("What is an antonym?", "opposite"),
    ("What is a synonym?", "same meaning|similar meaning"),
    ("What is a prime number?", "itself"),
    ("What is a volcano?", "magma|lava"),
    ("What is an island?", "surrounded by water"),
    ("What is a peninsula?", "three sides"),
    ("What is a herbivore?", "plants"),
    ("What is a carnivore?", "meat"),
    ("What is a century?", "100|hundred"),
    ("What is a decade?", "10|ten"),
    ("What is a square?", "four equal sides|4 equal sides"),
    ("What is a mammal?", "milk|warm-blooded|hair|fur"),
    ("What is a planet?", "orbits"),
    ("What is a glacier?", "ice"),
    ("What is a dictionary?", "words"),
    ("What is a thermometer used for?", "temperature"),
    ("What is a triangle?", "three sides|3 sides"),
    ("What is an author?", "writes|writer|wrote|written"),
]

# Replies that hold the accepted answer but say something false beside it, read by hand (CPU, fp32 run):
# replaying them would teach the error. Keyed by question; a reply that changes is read again.
WRONG_IN_DETAIL: dict[str, str] = {
    "What is the capital of Ireland?": "puts Dublin in the north",
    "What is the capital of Mexico?": "opens with 'El Diablo, Mexico.'",
    "What is the capital of Ecuador?": "'El Turco', 'the City of Gold'",
    "What is the capital of Qatar?": "'located in the Arabian Sea', 'a member of the Arab Emirates'",
    "What is the capital of Estonia?": "wrong neighbours on each side",
    "What is the capital of Albania?": "wrong neighbours on each side",
    "What is the capital of Costa Rica?": "'San José de Asunción'",
    "What is the main language spoken in the Netherlands?": "Dutch 'also spoken in Germany'",
    "In which country is the Great Wall?": "'the Kingdom of China'",
    "On which continent is Kenya?": "calls Kenya a continent",
    "On which continent is Argentina?": "calls Argentina a continent, swaps the oceans",
    "Which planet is known as the Red Planet?": "'the actual planet is actually called the Red Planet'",
    "What gas do humans need to breathe?": "nitrogen as a type of oxygen",
    "What is the chemical formula for carbon dioxide?": "hydrogen atoms in CO2",
    "What is the largest ocean on Earth?": "149.7 million km² (about 165)",
    "What is the largest rainforest in the world?": "3.5 million km² (about 5.5)",
    "In what year did World War II end?": "'lasted from 1945 to 1945'",
    "In what year did Columbus first reach the Americas?": "'the Columbus Columbus Expedition'",
    "In what year did the United States declare independence?": "'marking the end of the American Revolution'",
    "How many seconds are in a minute?": "'which gives you 360 seconds'",
    "How many months are in a year?": "'365 * 12 = 312 months'",
    "How many sides does a square have?": "'The answer ... is 1'",
    "How many sides does a pentagon have?": "'each side has five equal sides'",
    "How many sides does an octagon have?": "'formed by 8 equilateral triangles'",
    "How many grams are in a kilogram?": "'one gram is equal to 1000 grams'",
    "What is the opposite of happy?": "lists euphoria among sad feelings",
    "What is the opposite of left?": "invented symbols",
    "What is the currency of the European Union?": "calls the EU a sovereign member state",
    "What is the last month of the year?": "'December 31st'",
    "What is a verb?": "'It can be a noun'",
    "What is a mammal?": "circular: 'mammals, which are mammals'",
    "What is a herbivore?": "ants as herbivores",
}

SOURCE = "{base} greedy, checked correct"
BUILT_BY = "trainer/build_general_replay.py"  # in the meta of the rows this writes: a rerun replaces only them
_STOPWORDS = frozenset("a an the of in on is are was what which who how many much does do to for and with just "
                       "reply number compute".split())
_NUMBER_WORDS = frozenset("zero one two three four five six seven eight nine ten eleven twelve twenty".split())
_OPERATORS = (("multiplied by", "*"), ("divided by", "/"), ("plus", "+"), ("minus", "-"), ("times", "*"))


def _tokens(text: str) -> list[str]:
    text = re.sub(r"(\d)\s*[x×]\s*(\d)", r"\1 * \2", text.lower())
    for word, symbol in _OPERATORS:
        text = re.sub(rf"\b{word}\b", f" {symbol} ", text)
    return re.findall(r"[a-z0-9]+|[-+*/]", text)


def normalise(question: str) -> str:
    """Case, punctuation, operator words and "Reply with just the number" ignored."""
    return " ".join(_tokens(re.sub(r"reply with just the number\.?", "", question, flags=re.IGNORECASE)))


def content(question: str) -> Counter[str]:
    return Counter(t for t in _tokens(question) if t not in _STOPWORDS)


def named_answers(item: RegressionItem) -> list[str]:
    """The answers that name something ("Paris", "H2O"); numbers are left to the content-word check."""
    return [a for a in item.answers if not a.isdigit() and a.lower() not in _NUMBER_WORDS]


def near_regression(question: str, answers: tuple[str, ...], regression: list[RegressionItem]) -> str | None:
    """The regression question this candidate repeats, or None. Repeats: the same normalised text; every
    content word of the regression question in the candidate ("capital", "france" in "What is the capital
    city of France?"; "2", "+", "2" in "What is 2 plus 2?"); or a named regression answer in the candidate's
    question or accepted answers ("Which country is Paris the capital of?", "Where is the Eiffel Tower?")."""
    words = content(question)
    for item in regression:
        if (normalise(item.question) == normalise(question) or not content(item.question) - words
                or any(mentions(text, named_answers(item)) for text in (question, *answers))):
            return item.question
    return None


def ends_cleanly(reply: str, tokens: int, max_new_tokens: int) -> bool:
    """Stopped on its own, on a full sentence or as a short answer ("3 + 4 = 7")."""
    # Re-encoding the decoded reply can merge tokens differently: keep a margin below the limit.
    if tokens >= max_new_tokens - 2:
        return False
    return reply.rstrip("\"')").endswith((".", "!", "?")) or len(reply.split()) <= 8


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base_settings = TrainerSettings()
    loaded = load_base(base_settings)
    settings = base_settings.for_model(count_parameters(loaded.model))
    regression = load_regression_set()
    path = DEFAULT_GENERAL_REPLAY_FILE
    existing = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("meta", {}).get("built_by") != BUILT_BY]
    seen = {normalise(json.loads(line)["messages"][0]["content"]) for line in existing}
    for line in existing:
        question = json.loads(line)["messages"][0]["content"]
        if clash := near_regression(question, (), regression):
            logger.warning("existing row %r repeats regression question %r (kept: rows already there stay)",
                           question, clash)

    items: list[RegressionItem] = []
    for question, accepted in CANDIDATES:
        answers = tuple(accepted.split("|"))
        if normalise(question) in seen:
            logger.info("skip %r: already in the file or the list", question)
        elif clash := near_regression(question, answers, regression):
            logger.info("skip %r: repeats regression question %r", question, clash)
        else:
            seen.add(normalise(question))
            items.append(RegressionItem(question, answers))

    started = time.monotonic()
    replies = answer_greedily(loaded.model, loaded.tokenizer, items, settings.regression_max_new_tokens,
                              int(settings.sized("eval_batch_size")), autocast_dtype(settings.autocast, loaded.device))
    seconds = time.monotonic() - started

    rows, wrong, cut, wrong_detail, leaks = [], 0, 0, 0, 0
    regression_answers = [a for item in regression for a in named_answers(item)]
    for item, raw in zip(items, replies, strict=True):
        reply = raw.strip()
        if not item.is_correct(reply):
            wrong += 1
            logger.info("wrong %r: %r", item.question, reply)
        elif not ends_cleanly(reply, len(loaded.tokenizer(reply, add_special_tokens=False)["input_ids"]),
                              settings.regression_max_new_tokens):
            cut += 1
            logger.info("cut off %r: %r", item.question, reply)
        elif item.question in WRONG_IN_DETAIL:
            wrong_detail += 1
            logger.info("wrong in detail %r (%s): %r", item.question, WRONG_IN_DETAIL[item.question], reply)
        elif mentions(reply, regression_answers):
            leaks += 1  # the reply itself would teach a regression answer
            logger.info("names a regression answer %r: %r", item.question, reply)
        else:
            rows.append({"messages": [{"role": "user", "content": item.question},
                                      {"role": "assistant", "content": reply}],
                         "meta": {"source": SOURCE.format(base=settings.lora_base), "built_by": BUILT_BY}})

    path.write_text("\n".join([*existing, *(json.dumps(r, ensure_ascii=False) for r in rows)]) + "\n")
    right = len(items) - wrong
    logger.info("asked %d of %d candidates in %.0f s on %s (%s): %d right (%.0f%%), %d cut off, %d wrong in detail, "
                "%d naming a regression answer; wrote %d rows (%d kept + %d new) to %s", len(items), len(CANDIDATES), seconds,
                loaded.device, loaded.quantization, right, 100 * right / max(len(items), 1), cut, wrong_detail, leaks,
                len(existing) + len(rows), len(existing), len(rows), path)


if __name__ == "__main__":
    main()
