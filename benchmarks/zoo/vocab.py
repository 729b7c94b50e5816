"""The pico zoo's vocabulary: two domains sharing function words and the sentiment/attribute words.

Domain `a` is films, people and animals (where the four GLUE-like targets live); domain `b` is restaurants
and objects (the related auxiliary tasks). `benchmarks.zoo.grammar` builds every task's rows from these.
"""

REVIEW_NOUNS = {
    "a": ("movie", "film", "plot", "acting", "story", "ending", "cast", "script", "music", "scene"),
    "b": ("food", "meal", "soup", "pasta", "dessert", "service", "waiter", "menu", "bread", "coffee"),
}
POSITIVE = (
    "good",
    "great",
    "nice",
    "fine",
    "lovely",
    "superb",
    "brilliant",
    "charming",
    "pleasant",
    "excellent",
)
NEGATIVE = ("bad", "awful", "poor", "boring", "dull", "terrible", "weak", "bland", "dreadful", "mediocre")
INTENSIFIERS = ("very", "really", "quite", "truly", "rather")

# Countable nouns for agreement (singular, plural) and facts.
AGENTS = {
    "a": (
        ("dog", "dogs"),
        ("cat", "cats"),
        ("bird", "birds"),
        ("horse", "horses"),
        ("teacher", "teachers"),
        ("farmer", "farmers"),
        ("doctor", "doctors"),
        ("child", "children"),
        ("student", "students"),
        ("singer", "singers"),
    ),
    "b": (
        ("car", "cars"),
        ("boat", "boats"),
        ("lamp", "lamps"),
        ("chair", "chairs"),
        ("table", "tables"),
        ("truck", "trucks"),
        ("door", "doors"),
        ("house", "houses"),
        ("clock", "clocks"),
        ("bike", "bikes"),
    ),
}
# Intransitive verbs (3rd singular, plural) and copulas.
VERBS = (
    ("runs", "run"),
    ("sleeps", "sleep"),
    ("waits", "wait"),
    ("moves", "move"),
    ("stops", "stop"),
    ("falls", "fall"),
)
COPULAS = (("is", "are"), ("was", "were"), ("seems", "seem"))
STATES = ("old", "new", "quiet", "loud", "clean", "dirty", "happy", "tired", "warm", "cold")
ADVERBS = ("today", "often", "again", "slowly", "outside", "now")
PREPS = ("near", "behind", "with")

# Attribute categories for facts: a contradiction swaps a value within its category.
CATEGORIES = {
    "color": ("red", "blue", "green", "yellow", "black", "white"),
    "size": ("big", "small", "tall", "short"),
    "mood": ("happy", "sad", "angry", "calm"),
}

# Paraphrase material: synonym pairs and clause parts.
SYNONYMS = {
    "saw": "watched",
    "bought": "purchased",
    "liked": "enjoyed",
    "began": "started",
    "fixed": "repaired",
    "found": "discovered",
    "big": "large",
    "small": "little",
    "quickly": "fast",
    "happy": "glad",
    "yesterday": "the_day_before",
    "often": "frequently",
}
PARA_VERBS = ("saw", "bought", "liked", "began", "fixed", "found", "painted", "sold")
PARA_ADJS = ("big", "small", "happy", "old", "red", "new")
PARA_TIMES = ("yesterday", "often", "at_night", "last_week", "in_the_morning")
PARA_OBJECTS = {
    "a": ("book", "song", "picture", "letter", "game", "poem", "film", "garden"),
    "b": ("car", "lamp", "table", "clock", "boat", "bike", "chair", "door"),
}
PARA_SUBJECTS = {
    "a": ("teacher", "farmer", "doctor", "singer", "student", "girl", "boy", "man"),
    "b": ("driver", "cook", "waiter", "baker", "pilot", "clerk", "guard", "owner"),
}

TOPIC_WORDS = ("cinema", "dining")
