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
    // No automatic line breaks: a wide display formula scrolls in its own box (docs/stylesheets/extra.css),
    // which then shows a cue (class "maths-wide", set below): shadows at the cut edges and a scroll bar.
    linebreaks: { automatic: false },
    // MathJax declares a placeholder font "MathJax_Blank" at the address about:blank, which a browser refuses
    // to load from a page served over http (two console errors per page with maths). A local() source is
    // looked up among the installed fonts instead: never found, never fetched, no error.
    styles: { "@font-face": { "font-family": "MathJax_Blank", src: "local('MathJax_Blank')" } }
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
        markWideMaths();
        state.done = true;
      });
    });
    MathJax.Hub.Register.MessageHook("End Process", function () { markWideMaths(); });
  }
};

// A display formula wider than its box scrolls sideways inside it; the class "maths-wide" makes that visible
// (docs/stylesheets/extra.css). Marked after typesetting and again whenever the window's width changes.
function markWideMaths() {
  var displays = document.querySelectorAll(".md-content .MathJax_Display");
  for (var i = 0; i < displays.length; i++) {
    var box = displays[i].closest("div.arithmatex") || displays[i];
    box.classList.toggle("maths-wide", box.scrollWidth > box.clientWidth + 1);
  }
}
window.markWideMaths = markWideMaths;
window.addEventListener("resize", markWideMaths);
