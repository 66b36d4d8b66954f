"""The short instructions that frame each kind of task for a chat model (kept in one place so that the
prompts of all tasks can be read, and changed, together)."""

MATH_FORMAT = 'Reason step by step, then finish with "The answer is N." where N is the final number.'
LATEX_FORMAT = ('Reason step by step, then finish with "The answer is X." where X is the final answer '
                '(a number or a LaTeX expression).')
CHOICE_FORMAT = ('Reason step by step, then finish with "The answer is X." where X is the letter of the '
                 'correct option.')
CODE_FORMAT = "Reply with the complete Python function, signature included, in one ```python fence."
COMPLETION_FORMAT = ("Your answer already starts with the function as given above: continue it with the body "
                     "only, then close the ```python fence.")
