"""A procedurally generated chat corpus for the demo model: simple, correct English about a small
world (greetings, colours, animals, sums, counting, days, opposites, spelling, short stories) and a
polite fallback for everything else. Everything here is written for this project (Apache-2.0), so
the corpus and the model trained on it carry no third-party data.

    python demo/corpus.py 3          # print three sample dialogues
"""

from __future__ import annotations

import random
import sys

COLORS = {
    "the sky": "blue", "grass": "green", "a banana": "yellow", "snow": "white", "coal": "black",
    "a strawberry": "red", "an orange": "orange", "the sea": "blue", "a lemon": "yellow", "milk": "white",
    "a leaf": "green", "a tomato": "red", "chocolate": "brown", "a carrot": "orange", "the sun": "yellow",
    "a frog": "green", "an elephant": "grey", "a plum": "purple", "a cherry": "red", "a cloud": "white",
}
ANIMALS = {  # name: (sound, home, legs)
    "cow": ("moo", "on a farm", 4), "dog": ("woof", "in a house", 4), "cat": ("meow", "in a house", 4),
    "duck": ("quack", "on a pond", 2), "sheep": ("baa", "on a farm", 4), "horse": ("neigh", "in a stable", 4),
    "lion": ("roar", "in the grasslands", 4), "owl": ("hoot", "in a tree", 2), "pig": ("oink", "on a farm", 4),
    "frog": ("ribbit", "near a pond", 4), "bee": ("buzz", "in a hive", 6), "mouse": ("squeak", "in a hole", 4),
    "snake": ("hiss", "in the grass", 0), "bird": ("tweet", "in a nest", 2), "fish": ("blub", "in the water", 0),
}
OPPOSITES = {"hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad", "day": "night",
             "old": "new", "light": "dark", "open": "closed", "wet": "dry", "early": "late", "loud": "quiet",
             "full": "empty", "hard": "soft", "tall": "short", "left": "right", "in": "out", "yes": "no"}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                "nineteen", "twenty"]
SPELL_WORDS = ["cat", "dog", "sun", "tree", "book", "house", "apple", "water", "happy", "friend", "school",
               "river", "green", "music", "bread", "garden", "rabbit", "window", "pencil", "summer"]
UNKNOWN_TOPICS = ["the capital of France", "quantum physics", "the stock market", "the year 1492",
                  "the tallest mountain", "how a computer works", "the weather tomorrow", "the moon landing",
                  "the price of gold", "the meaning of life", "who won the game", "the speed of light",
                  "the history of Rome", "how to fix a car", "the best movie", "the population of China"]

NAMES = ["Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Leo", "Emma", "Sam", "Zoe", "Jack"]
STORY_ANIMALS = ["cat", "dog", "rabbit", "bear", "fox", "duck", "mouse", "owl", "frog", "horse"]
ADJECTIVES = ["little", "happy", "brave", "shy", "curious", "kind", "sleepy", "clever", "small", "friendly"]
PLACES = ["in a small village", "near a big forest", "by the sea", "on a green hill", "in a busy town",
          "next to a quiet river", "on a sunny farm", "in a tall old house"]
WANTS = ["to find a red ball", "to climb the big tree", "to see the sea", "to bake a cake",
         "to make a new friend", "to find the lost key", "to fly a kite", "to build a little boat",
         "to find some berries", "to cross the river"]
PROBLEMS = ["But the path was long and hard.", "But it started to rain.", "But the wind was very strong.",
            "But it got dark very fast.", "But the gate was closed.", "But it was too big to do alone."]
HELPERS = ["a wise old owl", "a kind farmer", "a friendly dog", "a little bird", "a tall giraffe", "a big brown bear"]
ENDINGS = ["In the end, they were very happy.", "They smiled and went home together.",
           "It was the best day ever.", "From that day on, they were good friends.",
           "They laughed and played until the sun went down.", "And they all had a warm dinner together."]
LESSONS = ["Asking for help is a good thing.", "Friends make everything easier.", "Never give up.",
           "Being kind always helps.", "Small steps can lead to big things."]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _ask(rng: random.Random, question: str) -> str:
    """Surface variety: politeness, case, punctuation."""
    style = rng.random()
    if style < 0.15:
        question = "Can you tell me " + question[0].lower() + question[1:].rstrip("?") + "?"
    elif style < 0.25:
        question = question.rstrip("?") + ", please?"
    if rng.random() < 0.2:
        question = question.lower()
    if rng.random() < 0.15:
        question = question.rstrip("?.!")
    return question


def story(rng: random.Random, animal: str | None = None) -> str:
    name = rng.choice(NAMES)
    animal = animal or rng.choice(STORY_ANIMALS)
    adj = rng.choice(ADJECTIVES)
    helper = rng.choice(HELPERS)
    want = rng.choice(WANTS)
    sentences = [
        f"Once upon a time, there was a {adj} {animal} named {name}.",
        f"{name} lived {rng.choice(PLACES)}.",
        f"One day, {name} wanted {want}.",
        rng.choice(PROBLEMS),
        f"Then {name} met {helper}.",
        f"\"I will help you,\" said the {helper.split()[-1]}.",
        f"Together they tried again, and this time it worked.",
        rng.choice(ENDINGS),
    ]
    if rng.random() < 0.4:
        sentences.append("The lesson is: " + rng.choice(LESSONS))
    return " ".join(sentences)


def exchange(rng: random.Random) -> tuple[str, str]:
    """One (user, assistant) pair."""
    kind = rng.randrange(13)
    if kind == 0:
        q = rng.choice(["Hi", "Hello", "Hey there", "Good morning", "Hi there!", "Hello!", "Good evening"])
        a = rng.choice(["Hello! How can I help you today?", "Hi! What would you like to talk about?",
                        "Hello there! Ask me a question or ask for a story."])
    elif kind == 1:
        q = rng.choice(["Who are you?", "What is your name?", "What are you?", "What can you do?"])
        a = rng.choice(["I am a small demo model made with mlcgen. I can tell short stories, count, do small sums and talk about colors and animals.",
                        "I am the mlcgen demo model. I am small, so I know about simple things: colors, animals, numbers, days and stories."])
    elif kind == 2:
        thing, color = rng.choice(list(COLORS.items()))
        q = _ask(rng, f"What color is {thing}?")
        a = f"{_cap(thing)} is {color}."
    elif kind == 3:
        animal, (sound, home, legs) = rng.choice(list(ANIMALS.items()))
        sub = rng.randrange(3)
        if sub == 0:
            q, a = _ask(rng, f"What sound does a {animal} make?"), f"A {animal} says {sound}."
        elif sub == 1:
            q, a = _ask(rng, f"Where does a {animal} live?"), f"A {animal} lives {home}."
        else:
            q = _ask(rng, f"How many legs does a {animal} have?")
            a = f"A {animal} has no legs." if legs == 0 else f"A {animal} has {NUMBER_WORDS[legs]} legs."
    elif kind == 4:
        x, y = rng.randrange(11), rng.randrange(11)
        op = rng.randrange(3)
        if op == 0:
            q, a = _ask(rng, f"What is {x} plus {y}?"), f"{x} plus {y} is {x + y}."
        elif op == 1:
            x, y = max(x, y), min(x, y)
            q, a = _ask(rng, f"What is {x} minus {y}?"), f"{x} minus {y} is {x - y}."
        else:
            x, y = rng.randrange(6), rng.randrange(6)
            q, a = _ask(rng, f"What is {x} times {y}?"), f"{x} times {y} is {x * y}."
    elif kind == 5:
        n = rng.randrange(2, 11)
        q = _ask(rng, rng.choice([f"Count to {n}.", f"Can you count to {n}?", f"Please count from 1 to {n}."]))
        a = ", ".join(str(i) for i in range(1, n + 1)) + "."
    elif kind == 6:
        i = rng.randrange(7)
        if rng.random() < 0.5:
            q, a = _ask(rng, f"What day comes after {DAYS[i]}?"), f"{DAYS[(i + 1) % 7]} comes after {DAYS[i]}."
        else:
            q, a = _ask(rng, f"What day comes before {DAYS[i]}?"), f"{DAYS[i - 1]} comes before {DAYS[i]}."
    elif kind == 7:
        word, opposite = rng.choice(list(OPPOSITES.items()))
        if rng.random() < 0.5:
            word, opposite = opposite, word
        q, a = _ask(rng, f"What is the opposite of {word}?"), f"The opposite of {word} is {opposite}."
    elif kind == 8:
        word = rng.choice(SPELL_WORDS)
        q, a = _ask(rng, f"How do you spell {word}?"), f"{_cap(word)} is spelled {'-'.join(word)}."
    elif kind == 9:
        animal = rng.choice(STORY_ANIMALS)
        if rng.random() < 0.5:
            q, a = _ask(rng, f"Tell me a story about a {animal}."), story(rng, animal)
        else:
            q, a = _ask(rng, rng.choice(["Tell me a story.", "Tell me a short story.", "Can you tell me a story?"])), story(rng)
    elif kind == 10:
        q = rng.choice(["How are you?", "How are you today?", "How is it going?"])
        a = rng.choice(["I am fine, thank you! How are you?", "I am doing well, thanks for asking!"])
    elif kind == 11:
        q = rng.choice(["Thank you!", "Thanks", "Bye", "Goodbye!", "See you later"])
        a = "You are welcome!" if q.lower().startswith("thank") else rng.choice(["Goodbye! Have a nice day.", "Bye! Come back soon."])
    else:
        topic = rng.choice(UNKNOWN_TOPICS)
        q = _ask(rng, rng.choice([f"What do you know about {topic}?", f"Tell me about {topic}.", f"Explain {topic}."]))
        a = "I am a small model, so I do not know about that. I can tell stories, count, do small sums, and talk about colors, animals and days."
    return q, a


def dialogue(rng: random.Random) -> list[dict]:
    messages = []
    for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
        q, a = exchange(rng)
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages


def render_chatml(messages: list[dict]) -> str:
    """Same text as the chatml template in demo/mlcgen-demo/chat_template.jinja renders."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def dialogues(seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        yield render_chatml(dialogue(rng))


if __name__ == "__main__":
    for text in dialogues(seed=0, count=int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        print(text)
