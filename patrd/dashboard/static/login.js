// The login page's only script: keep the deep link. The app's address part
// after "#" (say #/d/web/logs) is never sent to the server; it came along on
// the redirect to this page, and goes back with the form so the 303 after a
// successful login lands on the same screen (a redirect keeps the fragment).

const form = document.getElementById("login-form");
if (form && /^#\/[^#]*$/.test(location.hash)) {
  form.action = `/ui/login${location.hash}`;
}
