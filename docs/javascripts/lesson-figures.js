// Lesson figures (docs/hooks/docs_site.py gives them the class "lesson-figure"): a click shows the
// figure at its full size, a second click fits it to the page again.
document.addEventListener("click", function (event) {
  var img = event.target;
  if (img && img.classList && img.classList.contains("lesson-figure")) {
    img.classList.toggle("zoomed");
  }
});
