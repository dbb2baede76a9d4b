// MathJax 2 settings for this site. MathJax itself is served from assets/mathjax/, copied at
// build time from the installed jupyter-server-mathjax package (docs/hooks/docs_site.py), so
// pages render their maths without any network access.
//
// Markdown pages: pymdownx.arithmatex (generic mode) turns $...$ and $$...$$ into \(...\) and \[...\].
// Lesson pages: notebook markdown cells keep $...$ and $$...$$, found by tex2jax directly.
window.MathJax = {
  // The package ships MathJax's combined configuration (TeX input, HTML-CSS output, the AMS
  // extensions); the separate output files are not included, so this file must be used.
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  MMLorHTML: { prefer: "HTML" },
  // An undefined macro is an error (reported below), not silently drawn in red.
  TeX: { noUndefined: { disabled: true } },
  tex2jax: {
    inlineMath: [["$", "$"], ["\\(", "\\)"]],
    displayMath: [["$$", "$$"], ["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  // jupyter-server-mathjax ships the STIX web fonts (woff) only.
  "HTML-CSS": {
    availableFonts: [],
    preferredFont: null,
    webFont: "STIX-Web",
    imageFont: null,
    // No automatic line breaks: a wide display formula scrolls in its own box (docs/stylesheets/extra.css)
    linebreaks: { automatic: false }
  },
  messageStyle: "none",
  showProcessingMessages: false,
  // window.siteMath lets a reader (and tests/test_docs_site.py) see that typesetting has
  // finished and whether any formula failed to parse.
  AuthorInit: function () {
    var state = (window.siteMath = { done: false, errors: [] });
    MathJax.Hub.Register.MessageHook("TeX Jax - parse error", function (message) {
      state.errors.push(String(message[1]));
    });
    MathJax.Hub.Register.MessageHook("Math Processing Error", function (message) {
      var err = message[2];
      state.errors.push(String((err && err.message) || err || message[1]));
    });
    MathJax.Hub.Register.StartupHook("End", function () {
      MathJax.Hub.Queue(function () {
        state.done = true;
      });
    });
  }
};
