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

# Paraphrase material: per clause slot, base word -> (synonym, contrast word). A paraphrase rewrites
# slots with synonyms; a non-paraphrase rewrites one slot with its contrast word. Both kinds of
# replacement appear only in the second sentence, so the label is lexical (learnable at pico scale),
# and a helper that knows half of the pairs fixes half of the target's errors.
PARA_ADJS = {
    "big": ("large", "tiny"),
    "small": ("little", "huge"),
    "happy": ("glad", "unhappy"),
    "old": ("ancient", "young"),
    "rich": ("wealthy", "poor"),
    "quiet": ("silent", "noisy"),
}
PARA_VERBS = {
    "saw": ("watched", "missed"),
    "bought": ("purchased", "stole"),
    "liked": ("enjoyed", "hated"),
    "began": ("started", "ended"),
    "fixed": ("repaired", "broke"),
    "found": ("discovered", "lost"),
}
PARA_TIMES = {
    "yesterday": ("the_day_before", "tomorrow"),
    "often": ("frequently", "rarely"),
    "early": ("soon", "late"),
    "at_night": ("after_dark", "at_noon"),
}
PARA_OBJECTS = {
    "a": ("book", "song", "picture", "letter", "game", "poem", "film", "garden"),
    "b": ("car", "lamp", "table", "clock", "boat", "bike", "chair", "door"),
}
PARA_SUBJECTS = {
    "a": ("teacher", "farmer", "doctor", "singer", "student", "girl", "boy", "man"),
    "b": ("driver", "cook", "waiter", "baker", "pilot", "clerk", "guard", "owner"),
}

TOPIC_WORDS = ("cinema", "dining")

# Entailment material: a hypothesis restates a premise fact with one modifier. Some modifiers keep
# what the premise says (entailment), others add what it does not (not entailment).
KEEPING = ("indeed", "certainly", "clearly", "surely", "obviously", "definitely", "plainly", "undoubtedly")
ADDING = ("always", "usually", "sometimes", "still", "also", "mostly", "partly", "briefly")
