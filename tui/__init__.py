"""tuneplan.tui — the `tuneplan tui` questionnaire (Textual), as components.

  app.py        the App: tabs, keys, commands, the debounced live plan; wires the parts below
  fields.py     the questions as data (flag, schema field, words): each question written once
  questions.py  the form built from fields.py; answers read back as the advisor's Answers
  planview.py   the live recommendation (memory bars on one scale, ways out first)
  runpane.py    the Run tab: a plan running in a child process, phases, loss, cancel
  runspane.py   the Runs tab: recorded runs and the read-only SQL box
  help.py       the keys screen;  messages.py  what the app says (notifications, problem lists)
  advising.py   the one door to the advisor and schemas, imported after the first paint
  search.py     ranked model search;  words.py  advisor messages in the TUI's words
Each component's styles sit beside it (*.tcss). torch is never imported here.
"""
